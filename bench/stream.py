"""Live-feed benchmark: many open SSE streams while events are ingested at a steady rate.

Run `.venv/bin/python bench/stream.py` (PostgreSQL and Redis on 127.0.0.1; database
`kraiter_bench_stream` and Redis db 3 are wiped). It starts the Procfile's `web` and `worker`
exactly as a PaaS would, then runs two phases of `--seconds` each at `--rate` single-event
`POST /api/events`:

1. no streams open (the baseline);
2. `--streams` (200) SSE connections open on `GET /api/events/stream`, all of one tenant.

It prints, per phase: accepted events/s, CPU seconds of web / worker / PostgreSQL per second of
load, and PostgreSQL transactions per second (pg_stat_database); for phase 2 also whether every
stream received every event exactly once and in the same order, and the delay from a request's
202 to the event's arrival on the streams (p50 / p99 / max over all deliveries). The difference
between the phases is what the streams cost.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg2
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import Processes  # noqa: E402
from bench.ingest import cpu_seconds  # noqa: E402
from bench.ingest import free_port  # noqa: E402
from bench.ingest import http_ok  # noqa: E402
from bench.ingest import kraiter_cli  # noqa: E402
from bench.ingest import percentile  # noqa: E402
from bench.ingest import procfile_commands  # noqa: E402

HOST = "127.0.0.1"
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE = "kraiter_bench_stream"
REDIS_URL = "redis://127.0.0.1:6379/3"
_ID = re.compile(rb"^id: (evt_\w+)$", re.M)


def recreate_database(drop_only: bool = False) -> str:
    admin = psycopg2.connect(ADMIN)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        if not drop_only:
            cursor.execute(f'CREATE DATABASE "{DATABASE}"')
    admin.close()
    return f"postgresql://postgres@127.0.0.1:5432/{DATABASE}"


def pg_commits(dsn: str) -> int:
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (DATABASE,))
        return int(cursor.fetchone()[0])


class Streams(threading.Thread):
    """N raw SSE connections read by one selector thread; records (event id, arrival) each."""

    def __init__(self, port: int, api_key: str, count: int) -> None:
        super().__init__(daemon=True)
        self.selector = selectors.DefaultSelector()
        self.received: list[list[tuple[str, float]]] = [[] for _ in range(count)]
        self.buffers = [b"" for _ in range(count)]
        self.refused = 0
        self.open: set[int] = set()
        self.stop = threading.Event()
        request = (f"GET /api/events/stream HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                   f"Authorization: Bearer {api_key}\r\nAccept: text/event-stream\r\n\r\n")
        for index in range(count):
            sock = socket.create_connection((HOST, port))
            sock.sendall(request.encode())
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, index)

    def run(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.selector.select(timeout=0.2):
                index, sock = key.data, key.fileobj
                try:
                    data = sock.recv(65536)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                if not data:
                    self.selector.unregister(sock)
                    continue
                now = time.perf_counter()
                buffer = self.buffers[index] + data
                if b" 503 " in buffer[:20]:
                    self.refused += 1
                    self.selector.unregister(sock)
                    continue
                if b" 200 " in buffer[:20]:
                    self.open.add(index)
                cut = buffer.rfind(b"\n")
                for match in _ID.finditer(buffer[:cut + 1]):
                    self.received[index].append((match.group(1).decode(), now))
                self.buffers[index] = buffer[cut + 1:]

    def connected(self) -> int:
        return len(self.open)


def drive(port: int, api_key: str, rate: float, seconds: float, accepted: dict[str, float]
          ) -> float:
    """POST single events at `rate`/s from 8 keep-alive clients; returns the wall time taken."""
    clients, total = 8, int(rate * seconds)
    started = time.perf_counter()

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=30)
        for n in range(offset, total, clients):
            pause = started + n / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            body = json.dumps({"email": f"user{n % 500}@bench.test", "event": "page.viewed",
                               "properties": {"n": n}})
            connection.request("POST", "/api/events", body=body, headers={
                "Authorization": f"Bearer {api_key}", "Content-Type": "application/json"})
            answer = connection.getresponse()
            payload = answer.read()
            if answer.status == 202:
                accepted[json.loads(payload)["id"]] = time.perf_counter()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def phase(name: str, *, port: int, api_key: str, dsn: str, processes: Processes,
          rate: float, seconds: float, streams: Streams | None) -> dict[str, Any]:
    accepted: dict[str, float] = {}
    cpu_before, commits_before = cpu_seconds(processes.groups()), pg_commits(dsn)
    wall = drive(port, api_key, rate, seconds, accepted)
    time.sleep(3)  # let the worker store the tail and the streams deliver it
    cpu_after, commits_after = cpu_seconds(processes.groups()), pg_commits(dsn)
    result: dict[str, Any] = {
        "phase": name, "accepted/s": len(accepted) / wall,
        "pg commits/s": (commits_after - commits_before) / wall,
        **{f"{group} cpu s/s": (cpu_after[group] - cpu_before[group]) / wall
           for group in ("web", "worker", "postgres")},
    }
    if streams is not None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
                len({i for i, _ in got} & accepted.keys()) < len(accepted)
                for got in streams.received):
            time.sleep(0.5)
        ours = [[(i, t) for i, t in got if i in accepted] for got in streams.received]
        orders = {tuple(i for i, _ in got) for got in ours}
        delays = [t - accepted[i] for got in ours for i, t in got]
        result.update({
            "streams": len(streams.received), "refused": streams.refused,
            "complete streams": sum(1 for got in ours if len(got) == len(accepted)),
            "duplicates": sum(len(got) - len({i for i, _ in got}) for got in ours),
            "one order for all": len(orders) == 1,
            "deliveries": len(delays),
            "202→stream p50 ms": percentile(delays, 0.5) * 1000,
            "202→stream p99 ms": percentile(delays, 0.99) * 1000,
            "202→stream max ms": max(delays, default=0) * 1000,
        })
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--max-streams", default="150", help="KRAITER_MAX_STREAMS per process")
    args = parser.parse_args(argv)

    log_dir = Path(tempfile.mkdtemp(prefix="kraiter-bench-stream-"))
    dsn = recreate_database()
    redis.Redis.from_url(REDIS_URL).flushdb()
    port = free_port()
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "DATABASE_URL": dsn,
           "REDIS_URL": REDIS_URL, "SECRET_KEY": "bench", "PORT": str(port), "HOST": HOST,
           "EMAIL_TRANSPORT": "memory", "KRAITER_DATA_DIR": str(log_dir / "data"),
           "KRAITER_MAX_STREAMS": args.max_streams, "PYTHONPATH": str(ROOT)}
    processes = Processes(log_dir, env)
    print(f"logs: {log_dir}", flush=True)
    try:
        subprocess.run([*kraiter_cli(), "migrate"], cwd=ROOT, env=env, check=True,
                       capture_output=True)
        tenant = json.loads(subprocess.run(
            [*kraiter_cli(), "tenants", "create", "Bench", "--json"], cwd=ROOT, env=env,
            check=True, capture_output=True, text=True).stdout)
        procfile = procfile_commands()
        for name in ("web", "worker"):
            processes.start(name, ["bash", "-c", "exec " + procfile[name]])
        deadline = time.monotonic() + 60
        while not (http_ok(port, "/healthz") and "ready." in processes.log("worker")):
            processes.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("the stack did not start")
            time.sleep(0.3)
        common = {"port": port, "api_key": tenant["apiKey"], "dsn": dsn,
                  "processes": processes, "rate": args.rate, "seconds": args.seconds}
        phase("warm-up", **{**common, "seconds": 3}, streams=None)
        results = [phase("no streams", **common, streams=None)]
        streams = Streams(port, tenant["apiKey"], args.streams)
        streams.start()
        deadline = time.monotonic() + 30
        while streams.connected() + streams.refused < args.streams:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {streams.connected()} streams connected")
            time.sleep(0.2)
        results.append(phase(f"{args.streams} streams", **common, streams=streams))
        streams.stop.set()
    finally:
        processes.stop()
        recreate_database(drop_only=True)
        redis.Redis.from_url(REDIS_URL).flushdb()
    print(f"\n{args.rate:.0f} events/s for {args.seconds:.0f} s; web: 2 gunicorn processes, "
          f"KRAITER_MAX_STREAMS={args.max_streams}")
    keys: dict[str, None] = defaultdict(lambda: None)
    for result in results:
        keys.update(dict.fromkeys(result))
    for key in keys:
        cells = [result.get(key, "") for result in results]
        print(f"  {key:<22}" + "".join(
            f"{c:>16.2f}" if isinstance(c, float) else f"{c!s:>16}" for c in cells))


if __name__ == "__main__":
    main()
