"""Celery's routine per-task lines: gone for event batches, kept for everything else."""

from __future__ import annotations

import logging

import pytest
from celery.app import trace

from tasks.task_logs import quiet_routine_lines


def _context(name: str) -> dict[str, object]:
    return {"id": "t1", "name": name, "args": "[3 events]", "kwargs": "{}", "eta": None,
            "return_value": 3, "runtime": 0.01, "exc": "boom", "description": "raised unexpected",
            "traceback": ""}


def _log_like_celery(name: str) -> None:
    """What the worker logs about one run of task `name`: received, retried, failed, done."""
    context = _context(name)
    logging.getLogger("celery.worker.strategy").info(trace.LOG_RECEIVED, context,
                                                     extra={"data": context})
    trace.info(trace.LOG_RETRY, context)
    trace.logger.error(trace.LOG_FAILURE, context, extra={"data": context})
    trace.info(trace.LOG_SUCCESS, context)


def test_event_batches_drop_only_their_received_and_succeeded_lines(
        caplog: pytest.LogCaptureFixture) -> None:
    quiet_routine_lines()
    quiet_routine_lines()  # idempotent: one filter per logger
    with caplog.at_level(logging.INFO):
        _log_like_celery("events.ingest")
        _log_like_celery("sends.deliver")

    lines = [record.getMessage() for record in caplog.records]
    assert not any("events.ingest" in line and ("received" in line or "succeeded" in line)
                   for line in lines), lines
    assert any(line.startswith("Task events.ingest[t1] retry") for line in lines), lines
    assert any(line.startswith("Task events.ingest[t1] raised unexpected") for line in lines)
    assert [line.split("]")[1].split(":")[0].strip() for line in lines
            if "sends.deliver" in line] == ["received", "retry", "raised unexpected",
                                            "succeeded in 0.01s"]
    assert len(logging.getLogger("celery.app.trace").filters) == 1
