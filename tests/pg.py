"""A real, throw-away PostgreSQL server for tests: ``initdb`` into a temporary directory.

Usage::

    with PostgresServer() as server:
        store = PostgresStore(server.url)
        server.stop()    # pg_ctl stop -m fast
        server.start()   # same data directory, same port, same URL

The server listens on 127.0.0.1 only (trust authentication, which is safe on
loopback in a throw-away cluster) and on a Unix socket inside the temporary
directory. It is tuned for speed, not durability (``fsync=off``).

``initdb`` and ``postgres`` refuse to run as root, so under root every server
binary runs as an unprivileged user (``postgres`` if it exists, else ``nobody``)
through ``runuser -u USER --`` (or ``su``), and the temporary directory is
handed to that user. Not under root they run directly.

No binaries found is an error, never a skip: CI installs ``postgresql-15`` and a
silent skip would hide a missing store test. The search order is
``$OTEL_USECASE_PG_BINDIR``, ``pg_config --bindir``, ``initdb`` on ``PATH``, and
``/usr/lib/postgresql/*/bin`` (newest first).
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Final, Self

__all__ = ["PostgresNotFound", "PostgresServer", "find_bindir"]

SUPERUSER: Final = "otel"
DATABASE: Final = "otel_usecase"
_START_TIMEOUT_S: Final = 30
_INSTALL_HINT: Final = (
    "install the PostgreSQL server (Debian/Ubuntu: apt-get install postgresql-15) "
    "or set OTEL_USECASE_PG_BINDIR to the directory holding initdb and pg_ctl"
)


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server binaries (``initdb``, ``pg_ctl``) on this machine."""


def _has_server(bindir: str | os.PathLike[str]) -> bool:
    return all(os.access(Path(bindir) / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres"))


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", path))


def find_bindir() -> Path:
    """The directory of ``initdb``, ``pg_ctl`` and ``postgres``, or :class:`PostgresNotFound`."""
    tried: list[str] = []
    override = os.environ.get("OTEL_USECASE_PG_BINDIR")
    candidates: list[str] = [override] if override else []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out:
                candidates.append(out)
        except (OSError, subprocess.SubprocessError):
            tried.append("pg_config --bindir (failed)")
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).resolve().parent))
    candidates.extend(sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True))
    for candidate in candidates:
        if _has_server(candidate):
            return Path(candidate)
        tried.append(candidate)
    raise PostgresNotFound(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; looked in: "
        + (", ".join(tried) or "nothing (no pg_config, no initdb on PATH, no /usr/lib/postgresql)")
        + f". To run the PostgreSQL store tests, {_INSTALL_HINT}."
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _server_user() -> pwd.struct_passwd | None:
    """Who runs the server binaries: ``None`` for the current user unless that is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresNotFound(
        "running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL"
    )


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, started on construction of the context."""

    def __init__(self, *, bindir: str | os.PathLike[str] | None = None) -> None:
        self.bindir = Path(bindir) if bindir is not None else find_bindir()
        if not _has_server(self.bindir):
            raise PostgresNotFound(f"{self.bindir} has no initdb/pg_ctl/postgres. {_INSTALL_HINT}.")
        self.user = _server_user()
        self.port = 0
        self.running = False
        self._tmp: Path | None = None
        self._finalizer: weakref.finalize[..., PostgresServer] | None = None

    # paths and URLs

    @property
    def tmpdir(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("PostgresServer is not set up: use it as a context manager or call setup()")
        return self._tmp

    @property
    def datadir(self) -> Path:
        return self.tmpdir / "data"

    @property
    def logfile(self) -> Path:
        return self.tmpdir / "postgres.log"

    @property
    def url(self) -> str:
        """``postgresql://otel@127.0.0.1:PORT/otel_usecase``."""
        return self.url_for(DATABASE)

    def url_for(self, dbname: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    # running the binaries

    def _command(self, tool: str, *args: str) -> list[str]:
        return _argv(self.bindir, self.user, tool, *args)

    def _run(self, tool: str, *args: str, timeout: float = 60) -> str:
        argv = self._command(tool, *args)
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        env.pop("PGDATA", None)
        try:
            done = subprocess.run(
                argv, check=False, cwd=self.tmpdir, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{shlex.join(argv)} timed out after {timeout}s\n{self._log_tail()}") from exc
        if done.returncode != 0:
            raise RuntimeError(
                f"{shlex.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}{self._log_tail()}"
            )
        return done.stdout

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return ""
        return "\n--- postgres.log ---\n" + "\n".join(text.splitlines()[-lines:])

    # life cycle

    def setup(self) -> Self:
        """``initdb``, start, create the test database."""
        self._tmp = Path(tempfile.mkdtemp(prefix="otel-pg-"))
        self._finalizer = weakref.finalize(self, _cleanup, self.bindir, self.user, self._tmp)
        try:
            if self.user is not None:
                os.chown(self._tmp, self.user.pw_uid, self.user.pw_gid)
                os.chmod(self._tmp, 0o700)
                self._check_access()
            self._run(
                "initdb",
                "-D", str(self.datadir),
                "-U", SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            )  # fmt: skip
            with open(self.datadir / "postgresql.conf", "a", encoding="utf-8") as conf:
                conf.write(
                    "\n# otel-usecase tests: fast, not durable\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                    "shared_buffers = 16MB\nmax_connections = 40\n"
                    "listen_addresses = '127.0.0.1'\n"
                    "log_min_messages = warning\nlog_min_error_statement = panic\n"
                )
            for attempt in range(3):  # another process may take the free port before postgres does
                self.port = _free_port()
                try:
                    self.start()
                    break
                except RuntimeError:
                    if attempt == 2:
                        raise
            self._create_database(DATABASE)
        except BaseException:
            self.cleanup()
            raise
        return self

    def _check_access(self) -> None:
        """Fail clearly if the server user cannot reach the temporary directory (e.g. TMPDIR under /root)."""
        try:
            self._run("pg_ctl", "--version")
            subprocess.run(
                self._command_shell(f"test -w {shlex.quote(str(self.tmpdir))}"), check=True, timeout=10
            )
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            raise RuntimeError(
                f"user {self.user.pw_name if self.user else '?'} cannot write {self.tmpdir}: "
                "set TMPDIR to a directory every user can traverse (e.g. /tmp)"
            ) from exc

    def _command_shell(self, script: str) -> list[str]:
        assert self.user is not None
        runuser = shutil.which("runuser")
        if runuser:
            return [runuser, "-u", self.user.pw_name, "--", "/bin/sh", "-c", script]
        return ["su", "-s", "/bin/sh", self.user.pw_name, "-c", script]

    def start(self) -> None:
        """Start (or restart after :meth:`stop`) on the same data directory and port; wait until ready."""
        options = f"-k {self.tmpdir} -h 127.0.0.1 -p {self.port}"
        self._run(
            "pg_ctl", "start", "-D", str(self.datadir), "-l", str(self.logfile),
            "-w", "-t", str(_START_TIMEOUT_S), "-o", options,
        )  # fmt: skip
        self.running = True
        self._wait_ready()

    def _wait_ready(self) -> None:
        """``pg_ctl -w`` already waits; also make sure TCP on 127.0.0.1 accepts a real session."""
        import psycopg

        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            try:
                with psycopg.connect(self.url_for("postgres"), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL did not accept connections: {exc}{self._log_tail()}"
                    ) from exc
                time.sleep(0.05)

    def stop(self) -> None:
        """``pg_ctl stop -m fast``: sessions are terminated, the data directory is kept."""
        if self.running:
            self._run(
                "pg_ctl", "stop", "-D", str(self.datadir), "-m", "fast", "-w", "-t", str(_START_TIMEOUT_S)
            )
            self.running = False

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL (one per test keeps tests independent)."""
        self._create_database(name)
        return self.url_for(name)

    def _create_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url_for("postgres"), autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def cleanup(self) -> None:
        """Stop the server if running and remove the temporary directory."""
        if self._finalizer is not None:
            self._finalizer()
        self.running = False
        self._tmp = None

    def __enter__(self) -> Self:
        return self.setup()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


def _argv(bindir: Path, user: pwd.struct_passwd | None, tool: str, *args: str) -> list[str]:
    """The command line running ``bindir/tool`` as ``user`` (``None``: as ourselves)."""
    argv = [str(bindir / tool), *args]
    if user is None:
        return argv
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", user.pw_name, "--", *argv]
    return ["su", "-s", "/bin/sh", user.pw_name, "-c", shlex.join(argv)]


def _cleanup(bindir: Path, user: pwd.struct_passwd | None, tmp: Path) -> None:
    """Stop a server left running (also at interpreter exit) and delete its directory."""
    datadir = tmp / "data"
    if (datadir / "postmaster.pid").exists():
        argv = _argv(bindir, user, "pg_ctl", "stop", "-D", str(datadir), "-m", "immediate", "-w", "-t", "10")
        try:
            subprocess.run(argv, cwd="/", capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            pass
    shutil.rmtree(tmp, ignore_errors=True)
