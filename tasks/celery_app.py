"""Celery wired from the Flask app (Flask's documented pattern). Imports nothing from `app/`."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from celery import Celery
from celery import Task
from flask import Flask

from tasks import embedded_broker
from tasks import redis_transport
from tasks import task_logs


class Queue(StrEnum):
    """Every queue this project uses; workers consume all of them unless told otherwise."""

    INGEST = "ingest"
    EMAIL = "email"
    DEFAULT = "default"
    MAINTENANCE = "maintenance"


def celery_init_app(app: Flask) -> Celery:
    """Create the Celery app from `app.config["CELERY"]`; tasks run inside an app context."""
    embedded_broker.register()
    redis_transport.register()
    task_logs.quiet_routine_lines()

    class FlaskTask(Task):  # type: ignore[misc]
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery(app.name, task_cls=FlaskTask)
    celery.config_from_object(app.config["CELERY"])
    celery.set_default()
    app.extensions["celery"] = celery
    return celery
