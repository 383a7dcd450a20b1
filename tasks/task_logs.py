"""Celery's per-task "Task received" and "succeeded" lines, left out for the event batches.

Every batch of accepted events is a task: at a few thousand events a second those two INFO lines
a batch would be most of the worker's log, and making and writing them costs the worker CPU on
every message. Only those two routine lines go, and only for the tasks named here: retries and
failures of an ingest task are logged as before, other tasks keep every line, and Flower still
shows each task.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from celery.app.trace import LOG_RECEIVED
from celery.app.trace import LOG_SUCCESS

QUIET_TASKS = frozenset({"events.ingest"})
# Where Celery logs "Task received" (worker main process) and "succeeded" (pool child).
CELERY_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")
_ROUTINE = (LOG_RECEIVED, LOG_SUCCESS)


class RoutineLinesOf(logging.Filter):
    """Drops Celery's received/succeeded records about runs of one of `tasks`."""

    def __init__(self, tasks: Iterable[str]) -> None:
        super().__init__()
        self.tasks = frozenset(tasks)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg not in _ROUTINE:
            return True
        data = getattr(record, "data", None)  # Celery passes the task's context as `data`
        return not (isinstance(data, dict) and data.get("name") in self.tasks)


def quiet_routine_lines(tasks: Iterable[str] = QUIET_TASKS) -> None:
    """Install the filter on Celery's task loggers, once per process. Celery's logging setup
    configures handlers and levels, not these loggers' filters, so it stays."""
    for name in CELERY_TASK_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RoutineLinesOf) for existing in logger.filters):
            logger.addFilter(RoutineLinesOf(tasks))
