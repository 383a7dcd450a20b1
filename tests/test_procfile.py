"""The Procfile's process types, started exactly as a PaaS runs them."""

from __future__ import annotations

import os
import signal
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
from tests.support import free_port
from tests.support import process_env
from tests.support import start_http_server
from tests.support import stop_process_group


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name.strip(): command.strip() for name, _, command in
            (line.partition(":") for line in lines if line.strip() and not line.startswith("#"))}


def _procfile_process(kind: str, stack_env: dict[str, str], log_path: Path, probe_path: str,
                      **extra_env: str) -> tuple[str, subprocess.Popen[bytes]]:
    """The Procfile's `kind` command, run by a shell as a PaaS runs it, on a free port."""
    port = free_port()
    env = {**process_env(stack_env), "PORT": str(port), **extra_env,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    url = f"http://127.0.0.1:{port}"
    process = start_http_server(["bash", "-c", "exec " + procfile()[kind]], env=env,
                                log_path=log_path, probe_url=url + probe_path)
    return url, process


def test_the_contract_process_types_are_there() -> None:
    assert set(procfile()) >= {"release", "web", "worker", "beat", "flower"}


@pytest.fixture
def flower(stack_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    url, process = _procfile_process("flower", stack_env, tmp_path / "flower.log", "/",
                                     FLOWER_BASIC_AUTH="ops:s3cret")
    try:
        yield url
    finally:
        stop_process_group(process, timeout=20)


def test_flower_asks_for_the_basic_auth_credentials(flower: str) -> None:
    assert requests.get(flower, timeout=10).status_code == 401
    assert requests.get(flower, auth=("ops", "wrong"), timeout=10).status_code == 401
    answer = requests.get(f"{flower}/workers", auth=("ops", "s3cret"), timeout=10)
    assert answer.status_code == 200
    assert "Flower" in answer.text


@pytest.fixture
def web(stack_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    url, process = _procfile_process("web", stack_env, tmp_path / "web.log", "/healthz",
                                     HOST="127.0.0.1", WEB_CONCURRENCY="1")
    try:
        yield url, process
    finally:
        stop_process_group(process, timeout=0)  # the test has stopped it; make sure


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
