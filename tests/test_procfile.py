"""The Procfile's process types, started exactly as a PaaS runs them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import Tenant
from tests.sse_client import SSEStream
from tests.support import ROOT
from tests.support import process_env
from tests.support import wait_for


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name.strip(): command.strip() for name, _, command in
            (line.partition(":") for line in lines if line.strip() and not line.startswith("#"))}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_contract_process_types_are_there() -> None:
    assert set(procfile()) >= {"release", "web", "worker", "beat", "flower"}


@pytest.fixture
def flower(stack_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = {**process_env(stack_env), "PORT": str(port), "FLOWER_BASIC_AUTH": "ops:s3cret",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with (tmp_path / "flower.log").open("wb") as log:
        process = subprocess.Popen(["bash", "-c", "exec " + procfile()["flower"]], cwd=ROOT,
                                   env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        assert process.poll() is None, (tmp_path / "flower.log").read_text()
        try:
            requests.get(url, timeout=1)
        except requests.ConnectionError:
            return False
        return True

    try:
        wait_for(answering, timeout=60, message="Flower")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


def test_flower_asks_for_the_basic_auth_credentials(flower: str) -> None:
    assert requests.get(flower, timeout=10).status_code == 401
    assert requests.get(flower, auth=("ops", "wrong"), timeout=10).status_code == 401
    answer = requests.get(f"{flower}/workers", auth=("ops", "s3cret"), timeout=10)
    assert answer.status_code == 200
    assert "Flower" in answer.text


@pytest.fixture
def web(stack_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    env = {**process_env(stack_env), "PORT": str(port), "HOST": "127.0.0.1",
           "WEB_CONCURRENCY": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log_path = tmp_path / "web.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(["bash", "-c", "exec " + procfile()["web"]], cwd=ROOT,
                                   env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        assert process.poll() is None, log_path.read_text()
        try:
            return requests.get(f"{url}/healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_for(answering, timeout=60, message="gunicorn")
        yield url, process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def test_sigterm_ends_open_streams_so_a_deploy_does_not_wait_for_them(
        web: tuple[str, subprocess.Popen[bytes]], tenant: Tenant) -> None:
    url, process = web
    stream = SSEStream(f"{url}/api/events/stream", headers=tenant.headers)
    assert stream.response.status_code == 200
    assert stream.comments.get(timeout=10) == "connected"

    started = time.monotonic()
    os.killpg(process.pid, signal.SIGTERM)

    assert stream.finished.wait(10), "the stream was not ended"
    process.wait(timeout=20)
    # gunicorn would otherwise wait its graceful timeout (25 s) for the stream to finish.
    assert time.monotonic() - started < 10
