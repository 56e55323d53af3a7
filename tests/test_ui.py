"""The dashboard in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, via Selenium).

The ledger is filled through real calls (the real openai client, the real instrumentation,
FakeOpenAI) plus a few hostile ids written through the store API, as any OTLP sender could
store them. ``otel-usecase ui`` runs as a real process on loopback. The numbers the browser
shows are compared with ``otel-usecase report`` (a real CLI process) and with figures computed
here from published prices; downloads are compared byte for byte with the CLI's output.
One browser session for the module; screenshots go to ``$OTEL_USECASE_TEST_ARTIFACTS``
(default ``test-artifacts/``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple
from urllib.parse import urlencode

import openai
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from otel_usecase import record_outcome, track_context
from otel_usecase.budgets.api import set_budget
from otel_usecase.store import open_store
from otel_usecase.testing import FakeOpenAI, FakeUsage

from .builders import a_call
from .expect import mini_cost
from .rigs import CostRig
from .servers import UIProcess

BIN = Path(sys.executable).parent
MSG = [{"role": "user", "content": "hello"}]
ARTIFACTS = Path(
    os.environ.get("OTEL_USECASE_TEST_ARTIFACTS") or Path(__file__).parents[1] / "test-artifacts"
)


class Work(NamedTuple):
    use_case: str
    user: str
    experience: str
    version: str
    usages: tuple[FakeUsage, ...]
    tags: dict[str, str] | None = None
    resolved: float = 0.0
    """The value of outcome ``resolved`` the run records (0: none)."""


def U(prompt: int, completion: int, cached: int = 0) -> FakeUsage:
    return FakeUsage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)


# One run per line, in this order (so "newest first" is the reverse).
WORK = (
    Work("support", "alice", "chat", "v1", (U(1000, 200), U(1500, 300)), resolved=1.0),
    Work("support", "alice", "chat", "v2", (U(4000, 1000, cached=1000),)),
    Work(
        "support",
        "bob",
        "chat",
        "v2",
        (U(800, 100), U(800, 100), U(800, 100)),
        tags={"tenant": "acme"},
        resolved=2.0,
    ),
    Work("search", "carol", "lookup", "v1", (U(300, 50),), resolved=1.0),
    Work("search", "carol", "lookup", "v1", (U(600, 50),)),
)


def run_cost(work: Work) -> float:
    return sum(mini_cost(u.prompt_tokens, u.completion_tokens, u.cached_tokens) for u in work.usages)


HOSTILE_USE_CASE = "<script>document.title='pwned'</script>"
HOSTILE_RUN = "<img src=x onerror=\"document.title='pwned'\">\u202e" + "R" * 400
BIDI_USER = "\u202eecila"
HOSTILE_EXPERIENCE = "</td></tr></table><h1>broken</h1>"
HOSTILE_COST = 0.25  # written through the store API: the cost as stored
HOSTILE_TAG = ("tenant", "<b>acme</b>")
SUPPORT_BUDGET_USD = 0.002


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = "sqlite:///" + str(tmp_path_factory.mktemp("ui") / "costs.db")
    with FakeOpenAI() as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key="k", max_retries=0)
        rig = CostRig(url)
        try:
            for work in WORK:
                with track_context(
                    work.use_case,
                    user_id=work.user,
                    experience_name=work.experience,
                    use_case_version=work.version,
                    tags=work.tags,
                ):
                    for usage in work.usages:
                        fake.respond(usage=usage)
                        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]
                        time.sleep(0.002)  # distinct start times: "in time order" is checkable
                    if work.resolved:
                        assert record_outcome("resolved", work.resolved, tracer_provider=rig.provider)
            rig.flush()
        finally:
            rig.close()
    now = time.time_ns()
    store = open_store(url)
    try:
        hostile = a_call(
            trace_id="f" * 32, span_id="e" * 16, start_ns=now, end_ns=now + 1_000_000, use_case=HOSTILE_USE_CASE,
            run_id=HOSTILE_RUN, user_id=BIDI_USER, experience_name=HOSTILE_EXPERIENCE, cost_usd=HOSTILE_COST,
            tokens={"input": 7, "output": 3}, tags=MappingProxyType(dict([HOSTILE_TAG])),
        )  # fmt: skip
        assert store.write([hostile]) == []
    finally:
        store.close()
    set_budget(
        name="support-total", use_case="support", amount_usd=SUPPORT_BUDGET_USD, window="total", store=url
    )
    return url


@pytest.fixture(scope="module")
def ui(ledger: str) -> Iterator[UIProcess]:
    with UIProcess(ledger) as process:
        yield process


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1280,1400",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)  # fmt: skip
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()  # stops chromedriver and the browser it started


# --- helpers -----------------------------------------------------------------------------


def cli(ledger: str, *args: str) -> str:
    """What ``otel-usecase ARGS --store LEDGER`` prints on stdout, byte for byte (CSV lines end in CRLF)."""
    out: bytes = subprocess.run(
        [str(BIN / "otel-usecase"), *args, "--store", ledger], capture_output=True, timeout=120, check=True
    ).stdout
    return out.decode()


def report(ledger: str, by: str = "use-case", *args: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(cli(ledger, "report", "--by", by, "--format", "json", *args))
    return rows


def shown_usd(text: str) -> tuple[float, float]:
    """A cost as shown (``$0.00123``, ``>= $1,234.5``) -> (value, half a unit of its last decimal)."""
    match = re.fullmatch(r"(?:>= )?\$([\d,]+(?:\.(\d+))?)", text.strip())
    assert match, f"not a cost: {text!r}"
    decimals = len(match.group(2) or "")
    return float(match.group(1).replace(",", "")), 0.5 * 10**-decimals + 1e-12


def assert_shows(text: str, expected: float) -> None:
    value, tolerance = shown_usd(text)
    assert abs(value - expected) <= tolerance, f"{text!r} is not {expected}"


def figure(driver: WebDriver, name: str) -> str:
    text: str = driver.find_element(By.CSS_SELECTOR, f'[data-figure="{name}"] dd.figure').text
    return text


def rows(driver: WebDriver, table_id: str) -> list[dict[str, str]]:
    """A table as the user reads it: header -> cell text, per row."""
    table = driver.find_element(By.ID, table_id)
    headers = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    return [
        dict(zip(headers, (td.text for td in tr.find_elements(By.TAG_NAME, "td"))))
        for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")
    ]


def row_cell(driver: WebDriver, table_id: str, first_cell: str, column: int = 0) -> WebElement:
    for tr in driver.find_element(By.ID, table_id).find_elements(By.CSS_SELECTOR, "tbody tr"):
        cells = tr.find_elements(By.TAG_NAME, "td")
        if cells[0].text == first_cell:
            return cells[column]
    raise AssertionError(f"no row {first_cell!r} in #{table_id}")


def click(driver: WebDriver, element: WebElement, url_part: str) -> None:
    element.click()
    WebDriverWait(driver, 30).until(ec.url_contains(url_part))
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")


def screenshot(driver: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / f"ui-{name}.png"))


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as response:
        body: bytes = response.read()
        return body.decode()


def no_alert(driver: WebDriver) -> bool:
    try:
        driver.switch_to.alert  # noqa: B018
    except NoAlertPresentException:
        return True
    return False


# --- tests -------------------------------------------------------------------------------


def test_the_overview_shows_what_the_report_says_and_published_prices_give(
    ui: UIProcess, ledger: str, browser: WebDriver
) -> None:
    browser.get(ui.url + "/")
    screenshot(browser, "overview")
    expected_total = sum(run_cost(w) for w in WORK) + HOSTILE_COST
    assert_shows(figure(browser, "total-cost"), expected_total)
    assert_shows(figure(browser, "total-cost"), sum(r["cost_usd"] for r in report(ledger)))
    assert figure(browser, "calls") == f"{sum(len(w.usages) for w in WORK) + 1:,}"
    assert figure(browser, "runs") == f"{len(WORK) + 1:,}"
    assert figure(browser, "unpriced-calls") == "0"

    cli_rows = {r["use_case"]: r for r in report(ledger)}
    shown = {r["use case"]: r for r in rows(browser, "by-use-case")}
    assert set(shown) == set(cli_rows) == {"support", "search", HOSTILE_USE_CASE}
    for use_case in ("support", "search"):
        works = [w for w in WORK if w.use_case == use_case]
        row, cli_row = shown[use_case], cli_rows[use_case]
        assert_shows(row["cost"], sum(run_cost(w) for w in works))
        assert_shows(row["cost"], cli_row["cost_usd"])
        assert_shows(row["p50/run"], cli_row["p50_run_cost_usd"])
        assert_shows(row["p95/run"], cli_row["p95_run_cost_usd"])
        assert row["runs"] == str(len(works)) == str(cli_row["runs"])
        assert row["calls"] == str(sum(len(w.usages) for w in works))
        assert row["input"] == f"{sum(u.prompt_tokens for w in works for u in w.usages):,}"
        assert row["output"] == f"{sum(u.completion_tokens for w in works for u in w.usages):,}"
        assert row["cached"] == f"{sum(u.cached_tokens for w in works for u in w.usages):,}"
    # most expensive first, as the report
    assert [r["use case"] for r in rows(browser, "by-use-case")] == [r["use_case"] for r in report(ledger)]
    users = {r["user id"]: r for r in rows(browser, "by-user")}
    assert_shows(users["alice"]["cost"], run_cost(WORK[0]) + run_cost(WORK[1]))
    # the chart draws one bar segment per use case and bucket, each with its figures in a tooltip
    titles = [
        t.get_attribute("textContent") for t in browser.find_elements(By.CSS_SELECTOR, "svg.chart rect title")
    ]
    assert any("support: $" in (t or "") for t in titles)


def test_click_through_overview_use_case_run_and_call(ui: UIProcess, ledger: str, browser: WebDriver) -> None:
    browser.get(ui.url + "/")
    click(browser, row_cell(browser, "by-use-case", "support").find_element(By.TAG_NAME, "a"), "/use-case?")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Use case support"
    support = [w for w in WORK if w.use_case == "support"]
    assert_shows(figure(browser, "total-cost"), sum(run_cost(w) for w in support))
    (cli_row,) = report(ledger, "use-case", "--use-case", "support")
    p50 = browser.find_element(By.CSS_SELECTOR, "svg.chart text.p50-label").text
    p95 = browser.find_element(By.CSS_SELECTOR, "svg.chart text.p95-label").text
    assert p50.startswith("p50 ") and p95.startswith("p95 ")
    assert_shows(p50[4:], cli_row["p50_run_cost_usd"])
    assert_shows(p95[4:], cli_row["p95_run_cost_usd"])
    bars = browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar title")
    assert (
        sum(int(re.search(r": (\d+) runs", b.get_attribute("textContent") or "").group(1)) for b in bars) == 3
    )  # type: ignore[union-attr]
    # runs, newest first: the order they were made in, reversed
    newest = rows(browser, "runs")
    assert [r["user"] for r in newest] == ["bob", "alice", "alice"]
    assert [r["version"] for r in newest] == ["v2", "v2", "v1"]
    screenshot(browser, "use-case")
    click(browser, browser.find_element(By.LINK_TEXT, "most expensive first"), "order=cost")
    by_cost = rows(browser, "runs")
    expected = sorted((run_cost(w) for w in support), reverse=True)
    for row, cost in zip(by_cost, expected, strict=True):
        assert_shows(row["cost"], cost)
    # the two-call run (alice, v1) is the second most expensive
    second = browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")[1]
    run_id = second.find_elements(By.TAG_NAME, "td")[1].text
    click(browser, second.find_element(By.CSS_SELECTOR, "td:nth-child(2) a"), "/run?")
    assert browser.find_element(By.TAG_NAME, "h1").text == f"Run {run_id}"
    calls = rows(browser, "calls")
    shown_cli = json.loads(cli(ledger, "runs", "show", run_id, "--format", "json"))
    assert [c["input"] for c in calls] == ["1,000", "1,500"]  # in time order
    assert [c["output"] for c in calls] == ["200", "300"]
    for call, usage, record in zip(calls, WORK[0].usages, shown_cli, strict=True):
        assert_shows(call["cost"], mini_cost(usage.prompt_tokens, usage.completion_tokens))
        assert_shows(call["cost"], record["cost_usd"])
        assert call["model"] == "gpt-4o-mini"
        assert call["status"] == "priced"
        assert call["cost source"] == record["cost_source"] and call["cost source"].startswith(
            "genai-prices "
        )
        assert call["trace id"] == record["trace_id"] and re.fullmatch(r"[0-9a-f]{32}", call["trace id"])
    assert_shows(figure(browser, "run-cost"), run_cost(WORK[0]))
    screenshot(browser, "run")
    click(browser, browser.find_element(By.CSS_SELECTOR, "#calls tbody tr td a"), "/call?")
    facts = {
        d.find_element(By.TAG_NAME, "dt").text: d.find_element(By.TAG_NAME, "dd").text
        for d in browser.find_elements(By.CSS_SELECTOR, "#call > div")
    }
    assert facts["span id"] == shown_cli[0]["span_id"]
    assert facts["run"] == run_id and facts["user"] == "alice" and facts["version"] == "v1"
    assert_shows(facts["cost"], mini_cost(1000, 200))
    screenshot(browser, "call")


def test_filters_are_the_url_and_the_url_reproduces_the_view(
    ui: UIProcess, ledger: str, browser: WebDriver
) -> None:
    browser.get(ui.url + "/")
    browser.find_element(By.NAME, "user").send_keys("carol")
    browser.find_element(By.NAME, "since").send_keys("1h")
    click(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button"), "user=carol")
    url = browser.current_url
    assert "since=1h" in url
    carol = sum(run_cost(w) for w in WORK if w.user == "carol")
    assert_shows(figure(browser, "total-cost"), carol)
    assert_shows(figure(browser, "total-cost"), report(ledger, "use-case", "--user", "carol")[0]["cost_usd"])
    assert [r["use case"] for r in rows(browser, "by-use-case")] == ["search"]
    # every link keeps the filters: the users page, then a fresh load of the same URL
    click(browser, browser.find_element(By.LINK_TEXT, "Users"), "/users?")
    assert "user=carol" in browser.current_url
    assert [r["user id"] for r in rows(browser, "by-user")] == ["carol"]
    browser.get(url)
    assert_shows(figure(browser, "total-cost"), carol)
    assert browser.find_element(By.NAME, "user").get_attribute("value") == "carol"
    # a range with no calls (until an hour ago) shows nothing, not a wrong total
    browser.get(ui.url + "/?until=1h")
    assert figure(browser, "calls") == "0"
    # experience and version combine
    browser.get(ui.url + "/use-case?use_case=support&version=v2")
    assert_shows(figure(browser, "total-cost"), run_cost(WORK[1]) + run_cost(WORK[2]))
    assert figure(browser, "runs") == "2"
    screenshot(browser, "filtered")


def test_tag_filters_select_what_report_tag_selects(ui: UIProcess, ledger: str, browser: WebDriver) -> None:
    run_id = report(ledger, "run", "--user", "bob")[0]["run_id"]
    browser.get(ui.url + "/run?id=" + run_id)
    facts = {
        d.find_element(By.TAG_NAME, "dt").text: d.find_element(By.TAG_NAME, "dd").text
        for d in browser.find_elements(By.CSS_SELECTOR, ".facts > div")
    }
    assert facts["tags"] == "tenant=acme"
    # a tag set by the app's scope: the report's --tag
    browser.get(ui.url + "/?tag=tenant=acme")
    assert_shows(figure(browser, "total-cost"), run_cost(WORK[2]))
    assert_shows(
        figure(browser, "total-cost"), report(ledger, "use-case", "--tag", "tenant=acme")[0]["cost_usd"]
    )
    # a tag: all must match (the value is hostile text, shown as text in the form)
    browser.get(ui.url + "/?" + urlencode({"tag": "=".join(HOSTILE_TAG)}))
    assert figure(browser, "calls") == "1"
    assert_shows(figure(browser, "total-cost"), HOSTILE_COST)
    assert "=".join(HOSTILE_TAG) in [i.get_attribute("value") for i in browser.find_elements(By.NAME, "tag")]
    browser.get(ui.url + "/?" + urlencode({"tag": "tenant=nobody"}))
    assert figure(browser, "calls") == "0"


def test_every_download_is_the_clis_output(ui: UIProcess, ledger: str, browser: WebDriver) -> None:
    for page, by in (
        ("/users", "user"),
        ("/experiences", "experience"),
        ("/models", "model"),
        ("/tags?key=tenant", "tag:tenant"),
    ):
        browser.get(ui.url + page)
        csv_link = browser.find_element(By.LINK_TEXT, "CSV").get_attribute("href")
        json_link = browser.find_element(By.LINK_TEXT, "JSON").get_attribute("href")
        assert csv_link and json_link
        assert fetch(csv_link) + "\n" == cli(ledger, "report", "--by", by, "--format", "csv")
        assert fetch(json_link) + "\n" == cli(ledger, "report", "--by", by, "--format", "json")
    # with filters: the links carry them
    browser.get(ui.url + "/users?experience=lookup")
    csv_link = browser.find_element(By.LINK_TEXT, "CSV").get_attribute("href")
    assert csv_link and "experience=lookup" in csv_link
    assert fetch(csv_link) + "\n" == cli(
        ledger, "report", "--by", "user", "--experience", "lookup", "--format", "csv"
    )
    # a use case's runs: runs list
    browser.get(ui.url + "/use-case?use_case=support")
    for fmt in ("CSV", "JSON"):
        link = browser.find_element(By.XPATH, f"//table[@id='runs']/ancestor::section//a[text()='{fmt}']")
        href = link.get_attribute("href")
        assert href
        expected = cli(ledger, "runs", "list", "--use-case", "support", "--format", fmt.lower())
        assert fetch(href) + "\n" == expected
    # one run's calls: runs show
    run_id = report(ledger, "run", "--user", "bob")[0]["run_id"]
    browser.get(ui.url + "/run?id=" + run_id)
    for fmt in ("CSV", "JSON"):
        link = browser.find_element(By.LINK_TEXT, fmt).get_attribute("href")
        assert link
        assert fetch(link) + "\n" == cli(ledger, "runs", "show", run_id, "--format", fmt.lower())


def test_hostile_ids_render_as_text_and_run_nothing(ui: UIProcess, browser: WebDriver) -> None:
    browser.get(ui.url + "/")
    assert browser.title == "Overview - otel-usecase"
    assert no_alert(browser)
    names = [r["use case"] for r in rows(browser, "by-use-case")]
    assert HOSTILE_USE_CASE in names  # the markup is shown, as text
    users = [r["user id"] for r in rows(browser, "by-user")]
    assert "\\u202eecila" in users  # the bidi override is shown escaped, it reorders nothing
    experiences = [r["experience name"] for r in rows(browser, "by-experience")]
    assert HOSTILE_EXPERIENCE in experiences
    assert not browser.find_elements(
        By.CSS_SELECTOR, "main script, main img, h1 ~ h1, main h1:nth-of-type(2)"
    )
    click(
        browser,
        row_cell(browser, "by-use-case", HOSTILE_USE_CASE).find_element(By.TAG_NAME, "a"),
        "/use-case?",
    )
    run_link = browser.find_element(By.CSS_SELECTOR, "#runs tbody tr td:nth-child(2) a")
    assert run_link.text.startswith("<img src=x onerror=") and run_link.text.endswith("\u2026")  # cut at 80
    assert len(run_link.text) == 80
    click(browser, run_link, "/run?")
    heading = browser.find_element(By.TAG_NAME, "h1").text
    assert heading.startswith("Run <img src=x onerror=") and "\\u202e" in heading
    assert browser.title.startswith("Run <img src=x onerror=")  # as text: no handler set it to 'pwned'
    assert no_alert(browser)
    assert not browser.find_elements(By.CSS_SELECTOR, "main img, main script")
    # the very long id breaks no layout: the page is no wider than the window
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 1
    assert_shows(figure(browser, "run-cost"), HOSTILE_COST)
    screenshot(browser, "hostile-run")


def test_everything_works_with_javascript_disabled(ui: UIProcess, ledger: str, browser: WebDriver) -> None:
    browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})  # type: ignore[attr-defined]
    try:
        browser.get(ui.url + "/")
        assert_shows(figure(browser, "total-cost"), sum(run_cost(w) for w in WORK) + HOSTILE_COST)
        browser.find_element(By.NAME, "experience").send_keys("lookup")
        click(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button"), "experience=lookup")
        assert_shows(figure(browser, "total-cost"), run_cost(WORK[3]) + run_cost(WORK[4]))
        click(
            browser, row_cell(browser, "by-use-case", "search").find_element(By.TAG_NAME, "a"), "/use-case?"
        )
        assert "experience=lookup" in browser.current_url
        assert len(rows(browser, "runs")) == 2
        click(browser, browser.find_element(By.CSS_SELECTOR, "#runs tbody tr td:nth-child(2) a"), "/run?")
        assert len(rows(browser, "calls")) == 1
        screenshot(browser, "no-javascript")
    finally:
        browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})  # type: ignore[attr-defined]


def test_budgets_show_spend_against_the_limit(ui: UIProcess, ledger: str, browser: WebDriver) -> None:
    browser.get(ui.url + "/budgets")
    (row,) = rows(browser, "budgets")
    support = sum(run_cost(w) for w in WORK if w.use_case == "support")
    assert row["budget"] == "support-total" and row["use case"] == "support"
    assert_shows(row["spent"], support)
    assert_shows(row["limit"], SUPPORT_BUDGET_USD)
    assert_shows(row["remaining"], max(SUPPORT_BUDGET_USD - support, 0.0))
    assert row["used"] == f"{100 * support / SUPPORT_BUDGET_USD:.1f}%"
    status = json.loads(cli(ledger, "budgets", "status", "--format", "json"))
    link = browser.find_element(By.LINK_TEXT, "JSON").get_attribute("href")
    assert link and json.loads(fetch(link)) == status
    screenshot(browser, "budgets")


def test_cost_per_outcome_is_the_reports_and_its_download_the_clis(
    ui: UIProcess, ledger: str, browser: WebDriver
) -> None:
    browser.get(ui.url + "/outcomes")
    browser.find_element(By.NAME, "outcome").send_keys("resolved")
    click(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button"), "outcome=resolved")
    shown = {r["use case"]: r for r in rows(browser, "outcomes")}
    cli_rows = {
        r["use_case"]: r
        for r in json.loads(cli(ledger, "report", "--per-outcome", "resolved", "--format", "json"))
    }
    for use_case in ("support", "search"):
        works = [w for w in WORK if w.use_case == use_case]
        row = shown[use_case]
        per_outcome = sum(run_cost(w) for w in works) / sum(w.resolved for w in works)
        assert_shows(row["cost per outcome"], per_outcome)
        assert_shows(row["cost per outcome"], cli_rows[use_case]["cost_per_outcome_usd"])
        assert row["with outcome"] == str(sum(1 for w in works if w.resolved))
        assert row["without"] == str(sum(1 for w in works if not w.resolved))
        assert_shows(row["cost without outcome"], sum(run_cost(w) for w in works if not w.resolved))
    screenshot(browser, "outcomes")
    for fmt in ("CSV", "JSON"):
        link = browser.find_element(By.LINK_TEXT, fmt).get_attribute("href")
        assert link
        assert fetch(link) + "\n" == cli(
            ledger, "report", "--per-outcome", "resolved", "--format", fmt.lower()
        )
    # A long list shows the dearest groups, as every list page does; its downloads keep every row.
    browser.get(ui.url + "/outcomes?outcome=resolved&limit=1")
    (first,) = rows(browser, "outcomes")
    dearest = json.loads(cli(ledger, "report", "--per-outcome", "resolved", "--format", "json"))[0]
    assert first["use case"] == dearest["use_case"] and len(cli_rows) > 1
    assert "The 1 most expensive; the downloads have every row." in browser.page_source
    link = browser.find_element(By.LINK_TEXT, "JSON").get_attribute("href")
    assert link and len(json.loads(fetch(link))) == len(cli_rows)
