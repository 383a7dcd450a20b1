"""Test helpers: backends, real worker and server processes, polling."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from typing import TypeVar

import psycopg2
import redis
import requests

T = TypeVar("T")

PG_ADMIN_DSN = os.environ.get("KRAITER_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
# Per-process names, so two test runs on one machine (or CI beside a developer) never collide.
TEST_DATABASE = os.environ.get("KRAITER_TEST_DATABASE", f"kraiter_test_{os.getpid()}")
REDIS_SERVER = "redis://127.0.0.1:6379"
_RUN_LOCK = "kraiter:test-run"  # in each Redis db: the pid of the test run that has it
ROOT = Path(__file__).resolve().parent.parent


def backend() -> str:
    """`postgres` or `embedded`."""
    return os.environ.get("KRAITER_TEST_BACKEND", "postgres")


def _recreate_pg_database(name: str) -> str:
    admin = psycopg2.connect(PG_ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(name: str = TEST_DATABASE) -> None:
    """Remove the run's database at the end of the session."""
    admin = psycopg2.connect(PG_ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_redis_db() -> str:
    """A Redis db no other test run on this machine uses (dbs 8-15), emptied for this run.

    Two runs sharing a db would take each other's Celery messages; a db whose run died is
    taken over. `KRAITER_TEST_REDIS` picks one explicitly.
    """
    if explicit := os.environ.get("KRAITER_TEST_REDIS"):
        redis.Redis.from_url(explicit).flushdb()
        return explicit
    for number in range(8, 16):
        url = f"{REDIS_SERVER}/{number}"
        client = redis.Redis.from_url(url)
        owner = client.get(_RUN_LOCK)
        if owner is not None and int(owner) != os.getpid() and _alive(int(owner)):
            continue
        if owner is not None:
            client.delete(_RUN_LOCK)
        if client.set(_RUN_LOCK, os.getpid(), nx=True, ex=6 * 3600):
            for key in client.scan_iter(count=1000):
                if key != _RUN_LOCK.encode():
                    client.delete(key)
            return url
    raise RuntimeError("Redis dbs 8-15 are all used by running test runs")


def flush_redis_db(url: str) -> None:
    """Lose everything the broker holds (a crash test), but keep this run's claim on the db."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.set(_RUN_LOCK, os.getpid(), ex=6 * 3600)


def release_redis_db(url: str) -> None:
    redis.Redis.from_url(url).flushdb()


def prepare_backend(kind: str, data_dir: Path) -> dict[str, str]:
    """Fresh database and broker for a test run; returns the env that selects them."""
    env = {"KRAITER_DATA_DIR": str(data_dir), "SECRET_KEY": "test-secret",
           "EMAIL_TRANSPORT": "memory", "KRAITER_BROKER_VISIBILITY_TIMEOUT": "5"}
    if kind == "postgres":
        env["DATABASE_URL"] = _recreate_pg_database(TEST_DATABASE)
        env["REDIS_URL"] = claim_redis_db()
    elif kind != "embedded":
        raise ValueError(f"unknown KRAITER_TEST_BACKEND {kind!r}")
    return env


def wait_for(predicate: Callable[[], T], *, timeout: float = 15.0, interval: float = 0.05,
             message: str = "condition") -> T:
    """Poll until `predicate()` is truthy; return its value or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def process_env(stack_env: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **stack_env}
    env.setdefault("PYTHONPATH", str(ROOT))
    return env


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_http_server(argv: list[str], *, env: dict[str, str], log_path: Path,
                      probe_url: str, timeout: float = 60.0) -> subprocess.Popen[bytes]:
    """Start a server in its own process group; return once `probe_url` answers (below 500).

    Fails with the server's log if it exits while starting.
    """
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)

    def answering() -> bool:
        assert process.poll() is None, log_path.read_text(errors="replace")
        try:
            return requests.get(probe_url, timeout=1).status_code < 500
        except (requests.ConnectionError, requests.Timeout):  # not up, or still loading the app
            return False

    try:
        wait_for(answering, timeout=timeout, message=f"{argv[0]} to answer {probe_url}")
    except BaseException:
        stop_process_group(process, timeout=0)
        raise
    return process


def stop_process_group(process: subprocess.Popen[bytes], *, timeout: float = 30.0) -> None:
    """SIGTERM a process started in its own group, SIGKILL if it is not gone by `timeout`."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


class WorkerProcess:
    """`celery -A tasks.worker worker` as a real child process (own process group)."""

    def __init__(self, stack_env: dict[str, str], log_path: Path, *, concurrency: int = 2,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.env = process_env(stack_env)
        self.log_path = log_path
        self.concurrency = concurrency
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> None:
        with self.log_path.open("ab") as log:
            self.process = self._spawn(log)
        if wait:
            wait_for(lambda: b"ready." in self.log_path.read_bytes()[-20000:] or self._died(),
                     timeout=60, message="the worker to start")
            if self._died():
                raise AssertionError("worker died:\n" + self.log_path.read_text()[-3000:])

    def _spawn(self, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks.worker", "worker", "--loglevel",
             "INFO", "--concurrency", str(self.concurrency), "--without-gossip",
             "--without-mingle", *self.extra_args],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def _died(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children), as a crash would."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def json_of(response: Any) -> Any:
    return response.get_json()
