"""The SQLite broker (tasks/embedded_broker.py), exercised for real: no mocks.

Consumers that "crash" are separate processes killed with SIGKILL, and the
Celery tests start real ``celery worker`` processes on a broker file in
``tmp_path``, because the property under test is exactly what survives a
process that gets no chance to clean up.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import closing
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from kombu import Connection

from tasks import embedded_broker

REPO_ROOT = Path(__file__).resolve().parents[2]

#: A visibility timeout no test waits for: messages reserved under it stay hidden.
FOREVER = 3600.0


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A broker file in a directory that does not exist yet (created on first use)."""
    return tmp_path / "data" / "broker.db"


@pytest.fixture
def url(db_path: Path) -> str:
    """The broker URL as the app builds it: scheme + absolute path."""
    embedded_broker.register()
    return f"kraiter-sqlite://{db_path}"


def connect(url: str, visibility_timeout: float = FOREVER) -> Connection:
    """A kombu connection to the broker with the given visibility timeout."""
    return Connection(url, transport_options={"visibility_timeout": visibility_timeout})


def table_rows(db_path: Path) -> list[tuple[Any, ...]]:
    """Every row still in the broker table: (queue, reserved_by, deliveries)."""
    with closing(sqlite3.connect(db_path)) as conn:
        return conn.execute(
            f"SELECT queue, reserved_by, deliveries FROM {embedded_broker.TABLE} ORDER BY id"
        ).fetchall()


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a child process that must import the project's `tasks`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate` until it holds; fail the test with `what` otherwise."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


# --- plain kombu -------------------------------------------------------------


def test_urls_name_an_absolute_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    assert embedded_broker.database_path(f"kraiter-sqlite://{path}") == path
    assert embedded_broker.database_path(embedded_broker.broker_url(path)) == path
    assert embedded_broker.database_path(str(path)) == path
    with pytest.raises(ValueError, match="absolute path"):
        embedded_broker.database_path("kraiter-sqlite://relative/broker.db")


def test_register_is_idempotent() -> None:
    embedded_broker.register()
    embedded_broker.register()
    with Connection("kraiter-sqlite:///unused/broker.db") as conn:
        assert conn.transport_cls == "kraiter-sqlite"
        assert conn.transport.__class__ is embedded_broker.Transport


def test_round_trip_is_fifo_per_queue(url: str, db_path: Path) -> None:
    with connect(url) as conn:
        first, second = conn.SimpleQueue("first"), conn.SimpleQueue("second")
        for n in range(10):
            first.put({"n": n})
            if n % 2:
                second.put({"n": n})
        assert (first.qsize(), second.qsize()) == (10, 5)

        for queue, expected in ((second, [1, 3, 5, 7, 9]), (first, list(range(10)))):
            got = []
            for _ in expected:
                message = queue.get(timeout=2)
                got.append(message.payload["n"])
                message.ack()
            assert got == expected
            with pytest.raises(queue.Empty):
                queue.get(timeout=0.3)
        first.close()
        second.close()
    assert table_rows(db_path) == []


def test_fetched_message_stays_in_table_until_acked(url: str, db_path: Path) -> None:
    with connect(url) as conn:
        queue = conn.SimpleQueue("jobs")
        queue.put("payload")
        message = queue.get(timeout=2)
        assert message.delivery_info.get("redelivered") is None
        # Reserved by this process, invisible to others, but not gone.
        [(name, reserved_by, deliveries)] = table_rows(db_path)
        assert (name, deliveries) == ("jobs", 1)
        assert reserved_by.endswith(f":{os.getpid()}")
        assert queue.qsize() == 0
        message.ack()
        assert table_rows(db_path) == []
        queue.close()


def test_requeue_and_graceful_close_make_messages_visible_at_once(url: str) -> None:
    with connect(url) as conn:
        queue = conn.SimpleQueue("jobs")
        for body in ("a", "b", "c"):
            queue.put(body)
        rejected = queue.get(timeout=2)
        rejected.reject(requeue=True)
        again = queue.get(timeout=2)
        # Back at its original place at the head of the queue, flagged.
        assert again.payload == "a"
        assert again.delivery_info["redelivered"] is True
        assert queue.get(timeout=2).payload == "b"
        queue.close()  # closes the channel: kombu restores what it still holds

    with connect(url) as conn:
        queue = conn.SimpleQueue("jobs")
        bodies = [queue.get(timeout=2) for _ in range(3)]
        assert [m.payload for m in bodies] == ["a", "b", "c"]
        for message in bodies:
            message.ack()
        queue.close()


def test_purge_keeps_reserved_messages_and_delete_drops_all(url: str, db_path: Path) -> None:
    with connect(url) as conn:
        queue = conn.SimpleQueue("jobs")
        for n in range(4):
            queue.put(n)
        held = queue.get(timeout=2)
        assert queue.clear() == 3  # AMQP purge: ready messages only
        assert len(table_rows(db_path)) == 1
        held.ack()
        queue.put("x")
        queue.channel.queue_delete("jobs")
        assert table_rows(db_path) == []
        queue.close()


CRASHING_CONSUMER = textwrap.dedent(
    """
    import os, signal, sys
    from kombu import Connection
    from tasks import embedded_broker

    embedded_broker.register()
    with Connection(sys.argv[1]) as conn:
        message = conn.SimpleQueue("jobs").get(timeout=10)
        print(message.payload, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no restore
    """
)


def test_message_of_a_killed_consumer_comes_back_after_visibility_timeout(
    url: str, db_path: Path
) -> None:
    with connect(url) as conn:
        queue = conn.SimpleQueue("jobs")
        queue.put("held-by-the-dead")
        queue.put("acked")
        queue.close()

    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_CONSUMER, url],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert crashed.stdout.strip() == "held-by-the-dead"

    # Still reserved: a consumer with a long visibility timeout skips it.
    with connect(url) as conn:
        queue = conn.SimpleQueue("jobs")
        message = queue.get(timeout=2)
        assert message.payload == "acked"
        message.ack()
        with pytest.raises(queue.Empty):
            queue.get(timeout=0.3)
        queue.close()

    time.sleep(1.2)
    with connect(url, visibility_timeout=1) as conn:
        queue = conn.SimpleQueue("jobs")
        message = queue.get(timeout=2)
        assert message.payload == "held-by-the-dead"
        assert message.delivery_info["redelivered"] is True
        message.ack()
        time.sleep(1.2)  # past the timeout again: acked means gone for good
        with pytest.raises(queue.Empty):
            queue.get(timeout=0.5)
        queue.close()
    assert table_rows(db_path) == []


RACING_CONSUMER = textwrap.dedent(
    """
    import pathlib, sys, time
    from kombu import Connection
    from tasks import embedded_broker

    embedded_broker.register()
    url, ready, go = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
    with Connection(url) as conn:
        queue = conn.SimpleQueue("jobs")
        ready.touch()
        while not go.exists():
            time.sleep(0.01)
        while True:
            try:
                message = queue.get(timeout=1)
            except queue.Empty:
                break
            print(message.payload, flush=True)
            time.sleep(0.005)  # holding a message a moment lets the others in on a busy box
            message.ack()
        queue.close()
    """
)


def test_concurrent_consumers_never_get_the_same_message(
    url: str, db_path: Path, tmp_path: Path
) -> None:
    count, consumers = 300, 4
    with connect(url) as conn:
        queue = conn.SimpleQueue("jobs")
        for n in range(count):
            queue.put(n)
        queue.close()

    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(consumers)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACING_CONSUMER, url, str(flag), str(go)],
            env=child_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for flag in ready
    ]
    try:
        wait_until(lambda: all(flag.exists() for flag in ready), 30, "consumers to start")
        go.touch()
        outputs = [proc.communicate(timeout=60)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    seen = [int(line) for out in outputs for line in out.split()]
    assert sorted(seen) == list(range(count))
    assert sum(1 for out in outputs if out.strip()) > 1, "consumers did not actually race"
    assert table_rows(db_path) == []


# --- a real Celery worker ----------------------------------------------------

CELERY_APP = '''
"""Celery app for the embedded-broker tests (written by the test into tmp_path)."""
import os
import time
from pathlib import Path

from celery import Celery

from tasks import embedded_broker

embedded_broker.register()  # before the Celery app exists

OUT = Path(os.environ["KRAITER_TEST_OUT"])
MAX_SLEEP = float(os.environ.get("KRAITER_TEST_MAX_SLEEP", "inf"))

app = Celery("kraiter_broker_test_app")
app.conf.update(
    broker_url=os.environ["KRAITER_TEST_BROKER_URL"],
    broker_transport_options={
        "visibility_timeout": float(os.environ["KRAITER_TEST_VISIBILITY_TIMEOUT"]),
    },
    broker_connection_retry_on_startup=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
)


def _log(kind, n):
    # One short O_APPEND write per line: safe from concurrent pool children.
    with open(OUT / f"{kind}.log", "a") as f:
        f.write(f"{n}\\n")


@app.task(name="record")
def record(n, sleep_s=0.0):
    _log("started", n)
    time.sleep(min(sleep_s, MAX_SLEEP))
    _log("done", n)
'''


class Worker:
    """A `celery worker` process on the test broker, in its own process group."""

    def __init__(self, tmp_path: Path, url: str, visibility_timeout: float, **env: str) -> None:
        self.tmp_path = tmp_path
        (tmp_path / "kraiter_broker_test_app.py").write_text(CELERY_APP)
        self.log_path = tmp_path / f"worker-{time.monotonic_ns()}.log"
        log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "kraiter_broker_test_app",
                "worker",
                "--pool=prefork",
                "--concurrency=2",
                "--loglevel=INFO",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
            ],
            cwd=tmp_path,
            env=child_env(
                PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO_ROOT)]),
                KRAITER_TEST_OUT=str(tmp_path),
                KRAITER_TEST_BROKER_URL=url,
                KRAITER_TEST_VISIBILITY_TIMEOUT=str(visibility_timeout),
                **env,
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so kill() gets the children
        )
        log.close()

    def log(self) -> str:
        return self.log_path.read_text()

    def kill(self) -> None:
        """SIGKILL the main process and its pool children at once: a hard crash."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Warm shutdown, as `docker stop` or systemd would ask for it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"worker ignored SIGTERM:\n{self.log()}")


@contextmanager
def running_worker(
    tmp_path: Path, url: str, visibility_timeout: float, **env: str
) -> Iterator[Worker]:
    """Run a worker for the duration of the block; never leak it."""
    worker = Worker(tmp_path, url, visibility_timeout, **env)
    try:
        yield worker
    finally:
        if worker.proc.poll() is None:
            os.killpg(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait(timeout=10)


@contextmanager
def sender(url: str) -> Iterator[Celery]:
    """The publishing side (the web process's role), closed afterwards."""
    embedded_broker.register()  # before the Celery app exists
    app = Celery("kraiter_broker_test_sender", broker=url, set_as_current=False)
    try:
        yield app
    finally:
        app.close()


def logged(tmp_path: Path, kind: str) -> Counter[int]:
    """How many times each task argument reached `kind` ("started"/"done")."""
    path = tmp_path / f"{kind}.log"
    return Counter(int(line) for line in path.read_text().split()) if path.exists() else Counter()


@pytest.mark.worker
@pytest.mark.timeout(60)
def test_celery_worker_runs_each_task_exactly_once(url: str, db_path: Path, tmp_path: Path) -> None:
    with sender(url) as app:
        # Task 0 runs 3x longer than the visibility timeout, and task 8 is an
        # ETA task the worker holds unacked in memory for 3 s: the worker's
        # lease renewal must keep both from being handed out a second time.
        app.send_task("record", args=[0, 3.0])
        app.send_task("record", args=[8], countdown=3)
        for n in range(1, 8):
            app.send_task("record", args=[n])
    expected = Counter(range(9))

    with running_worker(tmp_path, url, visibility_timeout=1) as worker:
        wait_until(lambda: logged(tmp_path, "done") == expected, 40, "all tasks to run")
        time.sleep(2.5)  # well past the visibility timeout: nothing comes back
        worker.stop()
        assert logged(tmp_path, "started") == expected, worker.log()
        assert logged(tmp_path, "done") == expected, worker.log()
    assert table_rows(db_path) == []


@pytest.mark.worker
@pytest.mark.timeout(60)
def test_celery_worker_killed_with_sigkill_loses_no_task(
    url: str, db_path: Path, tmp_path: Path
) -> None:
    tasks = range(4)
    with sender(url) as app:
        for n in tasks:
            app.send_task("record", args=[n, 60.0])

    # Two pool children, prefetch 1: the worker holds two messages when killed.
    default_timeout = embedded_broker.DEFAULT_VISIBILITY_TIMEOUT
    with running_worker(tmp_path, url, visibility_timeout=default_timeout) as worker:
        wait_until(lambda: len(logged(tmp_path, "started")) == 2, 30, "two tasks to start")
        worker.kill()
    assert logged(tmp_path, "done") == Counter()
    held = [row for row in table_rows(db_path) if row[1] is not None]
    assert len(held) == 2, table_rows(db_path)  # still in the table, still reserved

    # Restarted with a short visibility timeout (and short task sleeps so the
    # test does not wait out the original 60 s).
    with running_worker(
        tmp_path, url, visibility_timeout=1, KRAITER_TEST_MAX_SLEEP="0.2"
    ) as worker:
        wait_until(lambda: set(logged(tmp_path, "done")) == set(tasks), 40, "every task to finish")
        worker.stop()
        log = worker.log()
    assert all(logged(tmp_path, "done")[n] >= 1 for n in tasks), log
    assert table_rows(db_path) == [], log
