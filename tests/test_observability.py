"""Structured logs and metrics across processes, checked on real processes' output.

Logging and prometheus_client's multiprocess mode are per-process settings taken at start, so
these tests read what real child processes (a script, gunicorn, a Celery worker) print and serve.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from tests.conftest import Tenant
from tests.support import ROOT
from tests.support import WorkerProcess
from tests.support import free_port
from tests.support import process_env
from tests.support import start_http_server
from tests.support import stop_process_group
from tests.support import wait_for

LOG_SCRIPT = textwrap.dedent("""
    import logging
    from flask import g
    from app import create_app

    app = create_app()
    log = logging.getLogger("app.services.demo")
    with app.test_request_context():
        g.tenant_id = "ten_demo"
        log.info("send_queued", extra={"send_id": "snd_1", "enrolment_id": "enr_1",
                                       "event_id": "evt_1", "event": "purchase.completed"})
    log.debug("send_rendered", extra={"send_id": "snd_1"})
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("send_crashed", extra={"send_id": "snd_2"})
    app.logger.warning("flask_says_hello")
    logging.getLogger("somebody.else").warning("not ours")
""")


def _run_logging_script(stack_env: dict[str, str], level: str) -> list[str]:
    env = {**process_env(stack_env), "LOG_LEVEL": level}
    done = subprocess.run([sys.executable, "-c", LOG_SCRIPT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stderr.splitlines()


def _json_lines(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_our_logs_are_json_lines_with_context_and_fields(stack_env: dict[str, str]) -> None:
    lines = _run_logging_script(stack_env, "INFO")
    entries = {entry["event"]: entry for entry in _json_lines(lines)}

    queued = entries["send_queued"]
    assert queued["level"] == "info"
    assert queued["logger"] == "app.services.demo"
    assert queued["tenant_id"] == "ten_demo"
    assert (queued["send_id"], queued["enrolment_id"], queued["event_id"]) == (
        "snd_1", "enr_1", "evt_1")
    assert queued["time"].endswith("Z")
    assert queued["extra_event"] == "purchase.completed"  # never hides the event name
    crashed = entries["send_crashed"]
    assert crashed["level"] == "error"
    assert "ZeroDivisionError" in crashed["exception"]
    assert "tenant_id" not in crashed  # outside a request there is no tenant
    assert entries["flask_says_hello"]["logger"] == "app"
    assert "send_rendered" not in entries  # below LOG_LEVEL
    # Other libraries' loggers are left alone (Python's last-resort handler prints them).
    assert "not ours" in lines
    # One line per record: nothing of ours is printed twice in another format.
    assert sum("send_queued" in line for line in lines) == 1


def test_log_level_comes_from_the_environment(stack_env: dict[str, str]) -> None:
    entries = {entry["event"] for entry in _json_lines(_run_logging_script(stack_env, "debug"))}

    assert "send_rendered" in entries


def test_an_unknown_log_level_stops_start_up() -> None:
    with pytest.raises(SystemExit, match="LOG_LEVEL"):
        Settings.from_env({"LOG_LEVEL": "LOUD"})


# --- Several processes sharing PROMETHEUS_MULTIPROC_DIR: gunicorn's workers and Celery's pool.


@pytest.fixture(scope="module")
def multiproc_env(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
                  ) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("prometheus-multiproc")
    return {**stack_env, "PROMETHEUS_MULTIPROC_DIR": str(folder)}


@pytest.fixture(scope="module")
def metrics_worker(multiproc_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[WorkerProcess]:
    process = WorkerProcess(multiproc_env, tmp_path_factory.mktemp("logs") / "worker.log")
    process.start()
    yield process
    process.stop()


@pytest.fixture
def web(multiproc_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """gunicorn with two worker processes, as the Procfile's `web` runs it."""
    port = free_port()
    server = start_http_server(
        [sys.executable, "-m", "gunicorn", "-c", "python:app.gunicorn_conf", "--workers",
         "2", "--bind", f"127.0.0.1:{port}", "app:create_app()"],
        env=process_env(multiproc_env), log_path=tmp_path / "gunicorn.log",
        probe_url=f"http://127.0.0.1:{port}/healthz")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_group(server)


def _samples(url: str) -> dict[str, float]:
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{key}={value}" for key, value in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def test_counters_add_up_across_web_and_worker_processes(web: str, tenant: Tenant,
                                                         metrics_worker: WorkerProcess) -> None:
    headers = tenant.headers
    for number in range(3):
        response = requests.post(f"{web}/api/events", headers=headers, timeout=10,
                                 json={"email": "a@acme.test", "event": f"e{number}"})
        assert response.status_code == 202
    batch = requests.post(f"{web}/api/events/batch", headers=headers, timeout=10, json={
        "events": [{"email": "b@acme.test", "event": "x"}, {"email": "c@acme.test",
                                                           "event": "y"}]})
    assert batch.status_code == 202

    def stored() -> bool:
        listed = requests.get(f"{web}/api/events", headers=headers, timeout=10).json()
        return len(listed["data"]) == 5
    wait_for(stored, message="the worker to store the events")

    def stored_counted() -> bool:
        return _samples(web).get("kraiter_events_stored_total{}") == 5
    wait_for(stored_counted, message="the worker's counter to reach the web processes")

    # Whichever gunicorn process answers, it reports every process's counts, the worker's too.
    for _ in range(6):
        samples = _samples(web)
        assert samples["kraiter_events_stored_total{}"] == 5
        assert samples["kraiter_events_accepted_total{}"] == 5
        assert samples["kraiter_tasks_finished_total{state=SUCCESS,task=events.ingest}"] >= 1
        assert samples["kraiter_queue_depth{queue=ingest}"] == 0


def test_worker_logs_our_records_once_as_json_beside_celerys_lines(
        app: Flask, metrics_worker: WorkerProcess) -> None:
    app.extensions["celery"].send_task("events.archive", queue="maintenance")

    def archived() -> list[dict[str, Any]]:
        lines = metrics_worker.log().splitlines()
        return [entry for entry in _json_lines(lines) if entry["event"] == "events_archived"]
    entry = wait_for(archived, message="the archive task's log line")[0]

    assert entry["logger"] == "tasks.retention"
    assert entry["task"] == "events.archive"
    assert entry["task_id"]
    assert entry["moved"] == 0
    log = metrics_worker.log()
    assert "ready." in log  # Celery's own lines are untouched
    assert sum("events_archived" in line for line in log.splitlines()) == 1
