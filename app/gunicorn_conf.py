"""gunicorn settings for the `web` process (`gunicorn -c python:app.gunicorn_conf ...`).

Threads, not more processes: requests spend most of their time waiting on the database and the
broker, and the ingest publisher batches the events of concurrent requests of one process.
"""

import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "16"))
timeout = 30
graceful_timeout = 25  # inside a PaaS's 30 s SIGTERM budget
keepalive = 5
max_requests = 20000
max_requests_jitter = 2000
control_socket_disable = True  # one fixed socket path per user would clash between instances
