"""Operations endpoints at the root: readiness, and the Prometheus exposition.

Liveness is `GET /healthz` (app.api.meta: no I/O). `GET /metrics` belongs to the API blueprint
too (the guides' path of the e-mail metrics), so the Prometheus scrape is answered from there
when no API key is given (app.api.metrics); the answer itself is built here.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from flask import Response
from flask import current_app
from flask import request

from app import db
from app import observability
from app.api.blueprint import public
from app.config import Settings
from app.errors import Unauthorised

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 2.0
_pool: ThreadPoolExecutor | None = None
_pool_pid: int | None = None
_pool_lock = threading.Lock()


def _checks_pool() -> ThreadPoolExecutor:
    # A few threads per process, made after any fork: a probe stuck on an unreachable host
    # holds one of them until its own socket timeout, and later probes time out instead of
    # piling up threads.
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readyz")
            _pool_pid = os.getpid()
        return _pool


def _outcome(name: str, future: Future[None], deadline: float) -> str:
    try:
        future.result(timeout=max(0.0, deadline - time.monotonic()))
    except FutureTimeout:
        log.warning("readiness_check_timed_out", extra={"check": name})
        return "timeout"
    except Exception as error:
        # The class only: this page is public, and messages name hosts and ports.
        log.warning("readiness_check_failed", extra={"check": name}, exc_info=True)
        return f"error: {type(error).__name__}"
    return "ok"


@public.get("/readyz")
def readyz() -> Any:
    """200 when the database and the broker answer within a short timeout, else 503."""
    settings: Settings = current_app.config["SETTINGS"]
    checks: dict[str, Callable[[], None]] = {
        "database": lambda: observability.ping_database(db.get_engine()),
        "broker": lambda: observability.ping_broker(settings)}
    deadline = time.monotonic() + READY_TIMEOUT_S
    futures = {name: _checks_pool().submit(check) for name, check in checks.items()}
    outcomes = {name: _outcome(name, future, deadline) for name, future in futures.items()}
    ready = all(outcome == "ok" for outcome in outcomes.values())
    return {"status": "ready" if ready else "unavailable", "checks": outcomes}, (
        200 if ready else 503)


def _require_basic_auth(expected: str | None) -> None:
    if expected is None:
        return
    given = request.authorization
    if (given is not None and given.type == "basic"
            and hmac.compare_digest(f"{given.username}:{given.password}".encode(),
                                    expected.encode())):
        return
    raise Unauthorised("These metrics need the credentials set in METRICS_BASIC_AUTH.",
                       headers={"WWW-Authenticate": 'Basic realm="metrics"'})


def prometheus_metrics() -> Response:
    """The Prometheus exposition, behind METRICS_BASIC_AUTH when it is set."""
    settings: Settings = current_app.config["SETTINGS"]
    _require_basic_auth(settings.metrics_basic_auth)
    body, content_type = observability.exposition(settings, db.get_engine(),
                                                  request.headers.get("Accept"))
    return Response(body, content_type=content_type)
