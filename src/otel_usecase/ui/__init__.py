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
    store: Store, *, root: str = "", token: str | None = None, executor: Executor | None = None
) -> DashboardApp:
    """The dashboard over ``store`` at path ``root`` (``""``: ``/``), requiring ``token`` when given."""
    from .api import API
    from .pages import PAGES

    routes = {path: Route(handler, params) for path, (handler, params) in {**PAGES, **API}.items()}
    return DashboardApp(store, routes, root=root, auth=UIAuth(token), executor=executor)
