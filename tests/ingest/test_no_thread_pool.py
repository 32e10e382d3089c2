"""Every route and dependency of the API runs on the event loop, none through the thread pool.

FastAPI runs a plain `def` endpoint or dependency in a worker thread (one hop per call per
request); for trivial dependencies that hop was most of a decision's CPU (docs/performance.md).
This walks the dependency tree of every route of the app as `create_app` builds it.
"""

from __future__ import annotations

import inspect
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import _iter_routes_with_context

from ingest.app import create_app
from tests.ingest.helpers import ingest_settings_for


def runs_on_the_loop(call: Any) -> bool:
    """What FastAPI awaits directly: a coroutine function, or an object whose __call__ is one."""
    if inspect.iscoroutinefunction(call):
        return True
    dunder = inspect.getattr_static(type(call), "__call__", None)
    return not inspect.isfunction(call) and inspect.iscoroutinefunction(dunder)


def blocking_calls(dependant: Dependant, where: str) -> list[str]:
    found = []
    if dependant.call is not None and not runs_on_the_loop(dependant.call):
        found.append(f"{where}: {getattr(dependant.call, '__qualname__', dependant.call)!r}")
    for sub in dependant.dependencies:
        found += blocking_calls(sub, where)
    return found


def test_no_route_or_dependency_runs_in_the_thread_pool() -> None:
    app = create_app(ingest_settings_for())
    # The routes as included (with the routers' own dependencies): FastAPI's view of them.
    routes = [ctx for _, ctx in _iter_routes_with_context(app.routes) if ctx is not None and ctx.dependant]
    assert len(routes) > 20  # the whole API, adapters included
    found = [call for ctx in routes for call in blocking_calls(ctx.dependant, ctx.path)]  # type: ignore[arg-type]
    assert not found, "\n".join(found)


def test_the_check_sees_a_plain_function() -> None:
    def plain() -> None: ...

    async def coroutine() -> None: ...

    assert not runs_on_the_loop(plain)
    assert runs_on_the_loop(coroutine)
