"""The `celery -A tasks.worker` target: the Celery app of a fully wired Flask app."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init

from app import create_app
from app import db

flask_app = create_app()
celery_app = flask_app.extensions["celery"]


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    # Prefork children inherit the parent's pooled connections; they must open their own.
    db.after_fork()
