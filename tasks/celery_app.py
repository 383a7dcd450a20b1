"""Celery wired from the Flask app (Flask's documented pattern). Imports nothing from `app/`."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from celery import Celery
from celery import Task
from celery_batches import Batches
from flask import Flask

from tasks import embedded_broker
from tasks import redis_transport
from tasks import serialization


class Queue(StrEnum):
    """Every queue this project uses; workers consume all of them unless told otherwise."""

    INGEST = "ingest"
    EMAIL = "email"
    DEFAULT = "default"
    MAINTENANCE = "maintenance"


class FlaskCelery(Celery):  # type: ignore[misc]
    """A Celery app that knows the Flask app its tasks run in."""

    def __init__(self, flask_app: Flask, **options: Any) -> None:
        super().__init__(flask_app.name, **options)
        self.flask_app = flask_app


class _InAppContext:
    """Runs a task's body inside the Flask app's context (Flask's documented Celery pattern), so
    services and extensions work in tasks as they do in views."""

    app: FlaskCelery
    run: Any

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.app.flask_app.app_context():
            return self.run(*args, **kwargs)


class FlaskTask(_InAppContext, Task):  # type: ignore[misc]
    """Every task's base: it runs inside the Flask app's context."""


class FlaskBatches(_InAppContext, Batches):  # type: ignore[misc]
    """For tasks that take the requests the worker gathered, many at once (celery-batches)."""


def celery_init_app(app: Flask) -> Celery:
    """Create the Celery app from `app.config["CELERY"]`; tasks run inside an app context."""
    embedded_broker.register()
    redis_transport.register()
    serialization.register()
    celery = FlaskCelery(app, task_cls=FlaskTask)
    celery.config_from_object(app.config["CELERY"])
    celery.set_default()
    app.extensions["celery"] = celery
    return celery
