"""``otel-usecase ui``: a local cost dashboard over the ledger (and ``serve --ui``, at ``/ui/``).

Server-rendered HTML and SVG from the same functions as the CLI's reports, a JSON/CSV API
under ``/api/``, no script, a strict CSP. Needs the ``serve`` extra (uvicorn).
"""

from __future__ import annotations

from concurrent.futures import Executor

from ..store import Store
from .app import DashboardApp, Route
from .auth import UIAuth

__all__ = ["DashboardApp", "UIAuth", "dashboard_app"]


def dashboard_app(
    store: Store,
    *,
    root: str = "",
    token: str | None = None,
    executor: Executor | None = None,
    require_token: bool = False,
) -> DashboardApp:
    """The dashboard over ``store`` at path ``root`` (``""``: ``/``).

    ``token``: the administrator's (sees everything); the store's principals (:mod:`otel_usecase.access`)
    see what is shared with them; with neither, loopback only. ``require_token``: never admit a request
    without a token (the dashboard listens on a non-loopback address)."""
    from .api import API
    from .pages import PAGES

    routes = {path: Route(handler, params) for path, (handler, params) in {**PAGES, **API}.items()}
    auth = UIAuth(token, require_token=require_token)
    return DashboardApp(store, routes, root=root, auth=auth, executor=executor)
