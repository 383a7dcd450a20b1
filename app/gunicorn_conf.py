"""gunicorn settings for the `web` process (`gunicorn -c python:app.gunicorn_conf ...`).

Threads, not more processes: requests spend most of their time waiting on the database and the
broker, and the ingest publisher batches the events of concurrent requests of one process.
`WEB_THREADS` serve the API; live-feed streams get threads of their own on top (each open stream
holds one, mostly asleep), capped by `KRAITER_MAX_STREAMS`, so streams never starve the API.

One process by default, for the 2-core box everything shares: with the single-event fast path
a process serves about 2,000 events a second on one core, and one publisher per box sends
messages twice the size two would, which nearly halves the worker's cost per event
(bench/ingest.py, 32 clients, same code: one process stored 1,698 events/s with a flat backlog
at 0.22 ms of worker CPU an event; two stored 1,580/s with a growing backlog at 0.38 ms).
Bigger machines raise `WEB_CONCURRENCY`.

A process is replaced after `max_requests` (leak insurance); with one process the replacement
is a pause of a second or two, so it comes after a few minutes of full load, not every 10 s.
"""

import os
import signal
from typing import Any

from app.config import stream_slots

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
threads = int(os.environ.get("WEB_THREADS", "32")) + stream_slots(os.environ)
timeout = 30
graceful_timeout = 25  # inside a PaaS's 30 s SIGTERM budget
keepalive = 5
max_requests = 500_000
max_requests_jitter = 50_000
control_socket_disable = True  # one fixed socket path per user would clash between instances


def post_worker_init(worker: Any) -> None:
    """On SIGTERM, end open live-feed streams first: gunicorn waits for running requests, and a
    stream never finishes by itself. Clients reconnect (to a new process) and resume."""
    from app.live_feed import signal_safe_closer

    stop_worker = signal.getsignal(signal.SIGTERM)
    end_streams = signal_safe_closer()

    def end_streams_then_stop(signum: int, frame: Any) -> None:
        end_streams()
        if callable(stop_worker):
            stop_worker(signum, frame)

    signal.signal(signal.SIGTERM, end_streams_then_stop)
