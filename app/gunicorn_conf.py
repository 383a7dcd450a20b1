"""gunicorn settings for the `web` process (`gunicorn -c python:app.gunicorn_conf ...`).

Threads in each process: requests spend most of their time waiting on the database and the
broker, and the ingest publisher batches the events of concurrent requests of one process.
`WEB_THREADS` serve the API; live-feed streams get threads of their own on top (each open stream
holds one, mostly asleep), capped by `KRAITER_MAX_STREAMS`, so streams never starve the API.

Two processes by default, for the 2-core box everything shares: one process is bound by its
interpreter lock near 2,000 single events a second. Each process batches its own requests' events
into broker messages, so more processes make smaller messages, and the worker gathers the
messages again (tasks/events.py) so that this costs it little. bench/ingest.py, 32 clients, same
code, same hour: one process 1,839 events/s, two 2,533/s, both with a flat backlog. Bigger
machines raise `WEB_CONCURRENCY`.

A process is replaced after `max_requests` (leak insurance): the other one serves meanwhile.
"""

import os
import signal
from typing import Any

from app.config import stream_slots

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
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
