"""Ingest benchmark: the real stack, started the Procfile way, against a bare floor.

Run `.venv/bin/python bench/ingest.py` (see bench/README.md for what each figure means).

How it measures, in one paragraph: a raw HTTP/1.1 keep-alive client (asyncio, 32 connections)
sends pre-built requests; every 202 hands the returned event ids, stamped with the client's
clock at the moment the answer arrived, to a poller thread. The poller asks PostgreSQL every
25 ms which of the pending requests are visible (their last event's id: a request's events are
stored in one transaction; `id = ANY(...)`, a primary-key lookup on a fresh snapshot) and stamps
their events with the time that query started; after the drain it checks every id. So each
event's accept-to-listable time is exact to one poll interval, the persisted count and the
backlog (accepted, not yet visible) are known on every poll, and the phase's end-to-end time
ends when the last event is seen. The same measurement runs against the floor: the same
gunicorn config serving a tiny WSGI app (plain-Python check + LPUSH) and one consumer process
doing multi-row INSERTs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections import defaultdict
from collections import deque
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from pathlib import Path
from time import perf_counter
from typing import Any

import psycopg2
import psycopg2.extras
import redis

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
FLOOR_QUEUE = "bench:floor:events"
POLL_INTERVAL_S = 0.025
POLL_CAP = 2000  # ids checked per poll: the oldest pending, which land first (FIFO queue)
POLL_BUDGET_FACTOR = 10  # poll at most every 10x the last poll's duration (<= 10% duty)
EVENT_NAMES = ("page.viewed", "signup.completed", "purchase.completed", "trial.started")
TARGETS = {"single_rate": 2000.0, "floor_ratio": 0.8, "p99_accept_ms": 50.0,
           "p99_listable_s": 1.0, "batch_rate": 20_000.0}


# --- The floor: what the least possible work for the same request costs -------------------------

_FLOOR_KEYS = frozenset({"email", "contactId", "event", "name", "properties", "timestamp"})


def floor_check(body: Any) -> str | None:
    """The same rules as TrackEventSchema, in plain Python; return the first problem or None."""
    if not isinstance(body, dict):
        return "body must be an object"
    if not body.keys() <= _FLOOR_KEYS:
        return "unknown field"
    name = body.get("event", body.get("name"))
    if not isinstance(name, str) or not 1 <= len(name) <= 200 or name.startswith("email."):
        return "event"
    email = body.get("email")
    if not isinstance(email, str) or len(email) > 320:
        return "email"
    local, at, domain = email.rpartition("@")
    if not at or not local or "." not in domain:
        return "email"
    properties = body.get("properties", {})
    if not isinstance(properties, dict) or len(properties) > 100:
        return "properties"
    for key, value in properties.items():
        if not 1 <= len(key) <= 100 or not isinstance(value, bool | int | float | str):
            return "properties"
        if isinstance(value, str) and len(value) > 2000:
            return "properties"
    timestamp = body.get("timestamp")
    if timestamp is not None:
        try:
            datetime.fromisoformat(timestamp)
        except (TypeError, ValueError):
            return "timestamp"
    return None


def _iso_now() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def floor_message(body: dict[str, Any], tenant_id: str) -> dict[str, Any]:
    """The queued message, shaped like Kraiter's."""
    created = _iso_now()
    local, _, domain = body["email"].rpartition("@")
    return {"id": f"evt_{time.time_ns() // 1_000_000:012x}{os.urandom(9).hex()}",
            "tenantId": tenant_id, "email": f"{local}@{domain.lower()}", "contactId": None,
            "event": body.get("event", body.get("name")), "properties": body.get("properties", {}),
            "timestamp": body.get("timestamp") or created, "createdAt": created}


_floor_redis: dict[int, redis.Redis] = {}


def floor_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """WSGI floor: check the key in memory, parse, check, LPUSH, answer 202 (as Kraiter does)."""
    def answer(status: str, payload: dict[str, Any]) -> list[bytes]:
        out = json.dumps(payload).encode()
        start_response(status, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(out)))])
        return [out]

    if environ["PATH_INFO"].endswith("/healthz"):
        return answer("200 OK", {"status": "ok"})
    auth = environ.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ")
    if hashlib.sha256(auth.encode()).hexdigest() != os.environ["BENCH_FLOOR_KEY_HASH"]:
        return answer("401 Unauthorized", {"error": {"code": "UNAUTHORISED"}})
    raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    try:
        body = json.loads(raw)
    except ValueError:
        return answer("400 Bad Request", {"error": {"code": "BAD_REQUEST"}})
    client = _floor_redis.get(os.getpid())
    if client is None:  # one pool per forked worker, shared by its threads
        client = _floor_redis[os.getpid()] = redis.Redis.from_url(os.environ["REDIS_URL"])
    tenant_id = os.environ["BENCH_TENANT_ID"]
    if environ["PATH_INFO"].endswith("/batch"):
        items = body.get("events") if isinstance(body, dict) else None
        if not isinstance(items, list) or not 1 <= len(items) <= 500:
            return answer("400 Bad Request", {"error": {"code": "VALIDATION_ERROR"}})
        results: list[dict[str, Any]] = []
        messages = []
        for item in items:
            problem = floor_check(item)
            if problem:
                results.append({"error": {"code": "VALIDATION_ERROR", "field": problem}})
            else:
                messages.append(floor_message(item, tenant_id))
                results.append({**messages[-1], "status": "queued"})
        if messages:
            client.lpush(FLOOR_QUEUE, *(json.dumps(m) for m in messages))
        return answer("202 Accepted", {"results": results, "accepted": len(messages)})
    problem = floor_check(body)
    if problem:
        return answer("400 Bad Request", {"error": {"code": "VALIDATION_ERROR", "field": problem}})
    message = floor_message(body, tenant_id)
    client.lpush(FLOOR_QUEUE, json.dumps(message))
    return answer("202 Accepted", {**message, "status": "queued"})


_FLOOR_CONTACTS_SQL = (
    "INSERT INTO floor_contacts (id, tenant_id, email, properties, subscribed, suppressed,"
    " created_at, updated_at) VALUES %s ON CONFLICT (tenant_id, email) DO NOTHING")
_FLOOR_EVENTS_SQL = (
    "INSERT INTO floor_events (id, tenant_id, contact_id, email, name, properties, source,"
    " timestamp, created_at) VALUES %s ON CONFLICT (id) DO NOTHING")


def _floor_store(cursor: Any, messages: list[dict[str, Any]]) -> None:
    by_tenant: dict[str, set[str]] = defaultdict(set)
    for message in messages:
        by_tenant[message["tenantId"]].add(message["email"])
    contact_ids: dict[tuple[str, str], str] = {}
    now = _iso_now()
    for tenant_id, emails in by_tenant.items():
        wanted = sorted(emails)  # sorted: two consumers never lock keys in opposite orders
        psycopg2.extras.execute_values(cursor, _FLOOR_CONTACTS_SQL, [
            (f"cnt_{os.urandom(12).hex()}", tenant_id, email, "{}", True, False, now, now)
            for email in wanted], page_size=500)
        cursor.execute("SELECT email, id FROM floor_contacts WHERE tenant_id = %s"
                       " AND email = ANY(%s)", (tenant_id, wanted))
        contact_ids.update(((tenant_id, email), cid) for email, cid in cursor.fetchall())
    psycopg2.extras.execute_values(cursor, _FLOOR_EVENTS_SQL, sorted(
        (m["id"], m["tenantId"], contact_ids[(m["tenantId"], m["email"])], m["email"],
         m["event"], json.dumps(m["properties"]), "api", m["timestamp"], m["createdAt"])
        for m in messages), page_size=500)


def run_floor_consumer() -> None:
    """The floor's worker: pop up to 500 messages, store them in one transaction, repeat."""
    broker = redis.Redis.from_url(os.environ["REDIS_URL"])
    connection = psycopg2.connect(os.environ["BENCH_PG_DSN"])
    while True:
        items: list[bytes] = broker.rpop(FLOOR_QUEUE, 500) or []  # type: ignore[assignment]
        if not items:
            popped: Any = broker.brpop([FLOOR_QUEUE], timeout=1)
            if not popped:
                continue
            items = [popped[1], *(broker.rpop(FLOOR_QUEUE, 499) or [])]
        with connection, connection.cursor() as cursor:
            _floor_store(cursor, [json.loads(item) for item in items])


# --- Processes: start them, account their CPU, always stop them ---------------------------------

class Processes:
    """Child processes in their own process groups, stopped on exit whatever happens."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = env
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"{name}.log").open("ab") as log:
            child = subprocess.Popen(argv, cwd=ROOT, env={**self.env, **(extra_env or {})},
                                     stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.children[name] = child
        return child

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def check_alive(self) -> None:
        for name, child in self.children.items():
            if child.poll() is not None:
                raise RuntimeError(f"{name} exited ({child.returncode}):\n{self.log(name)[-3000:]}")

    def stop(self, *names: str, sig: int = signal.SIGTERM) -> None:
        chosen = [n for n in (names or tuple(self.children)) if n in self.children]
        for name in chosen:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.children[name].pid, sig)
        deadline = time.monotonic() + 25
        for name in chosen:
            child = self.children.pop(name)
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait(timeout=10)

    def groups(self) -> dict[int, str]:
        return {child.pid: name for name, child in self.children.items()}


def cpu_seconds(groups: dict[int, str]) -> dict[str, float]:
    """CPU seconds used so far, by process group we started, PostgreSQL, Redis and this client."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = defaultdict(float)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # exited between listing and reading
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        stat = raw[raw.rindex(")") + 2:].split()
        used = (int(stat[11]) + int(stat[12])) / ticks
        group = groups.get(int(stat[2]))
        if group is None:
            group = ("client" if int(entry.name) == os.getpid() else "postgres"
                     if comm.startswith("postgres") else "redis" if comm.startswith("redis")
                     else None)
        if group:
            totals[group] += used
    with open("/proc/stat") as stat_file:
        values = [int(v) for v in stat_file.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest is inside user.
    totals["machine busy"] = sum(values[:3] + values[5:7]) / ticks
    return totals


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def wait_until(predicate: Callable[[], bool], what: str, processes: Processes,
               timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        processes.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def http_ok(port: int, path: str, headers: dict[str, str] | None = None) -> bool:
    import http.client

    try:
        connection = http.client.HTTPConnection(HOST, port, timeout=5)
        connection.request("GET", path, headers=headers or {})
        return connection.getresponse().status == 200
    except OSError:
        return False


# --- The load: raw HTTP/1.1 over keep-alive connections ------------------------------------------

def build_request(path: str, port: int, api_key: str, body: bytes) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {api_key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def event_bodies(count: int, emails: list[str], rng: random.Random) -> Iterator[dict[str, Any]]:
    for _ in range(count):
        yield {"email": rng.choice(emails), "event": rng.choice(EVENT_NAMES),
               "properties": {"plan": rng.choice(("free", "pro", "team")),
                              "amount": rng.randint(1, 500), "beta": rng.random() < 0.2}}


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    start = head.find(b"\r\ncontent-length:")
    if start < 0:
        raise ConnectionError("response without Content-Length")
    length = int(head[start + 17:head.find(b"\r\n", start + 2)])
    body = await reader.readexactly(length) if length else b""
    return int(head[9:12]), body, b"\r\nconnection: close" in head


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    first_error: str = ""
    retries: int = 0
    started: float = 0.0
    finished: float = 0.0


async def _client(port: int, work: Iterator[bytes], result: LoadResult,
                  on_accept: Callable[[bytes, float], None]) -> None:
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    for request in work:
        for attempt in range(4):
            if connection is None:
                connection = await asyncio.open_connection(HOST, port)
            reader, writer = connection
            sent = perf_counter()
            try:
                writer.write(request)
                await writer.drain()
                status, body, close = await _read_response(reader)
                break
            except (ConnectionError, asyncio.IncompleteReadError):
                # The server closed an idle or recycled connection (gunicorn max_requests).
                writer.close()
                connection = None
                result.retries += 1
                if attempt == 3:
                    raise
        done = perf_counter()
        result.latencies.append(done - sent)
        result.statuses[status] += 1
        if status == 202:
            on_accept(body, done)
        elif not result.first_error:
            result.first_error = f"{status} {body[:300]!r}"
        if close:
            writer.close()
            connection = None
    if connection is not None:
        connection[1].close()


def drive(port: int, requests: list[bytes], clients: int,
          on_accept: Callable[[bytes, float], None]) -> LoadResult:
    """Send every request once, `clients` at a time, each client on its own connection."""
    result = LoadResult()

    async def main() -> None:
        work = iter(requests)  # shared: each client takes the next request when it is free
        result.started = perf_counter()
        await asyncio.gather(*(_client(port, work, result, on_accept) for _ in range(clients)))
        result.finished = perf_counter()

    asyncio.run(main())
    return result


# --- The poller: when does each accepted event become listable? ---------------------------------

class _Poller(threading.Thread):
    """Watches accepted requests' events appear in `table`; records when, and the backlog.

    Each accepted request is watched through one probe, its last event id: a request's events
    travel in one message and are stored in one transaction (Kraiter's worker and the floor's
    consumer alike), so they become listable together. Checking every id instead made the
    poller the bottleneck of the batch phase (2,000 ids a query, ~20 ms each on a busy box, at
    most 10 % duty: ~5,000-10,000 events/s measurable). `verify` then checks every single id
    after the drain, so an event that never landed cannot hide behind its request's probe.
    """

    def __init__(self, dsn: str, table: str) -> None:
        super().__init__(name=f"poller-{table}", daemon=True)
        self.dsn = dsn
        self.table = table
        self.inbox: deque[tuple[list[str], float]] = deque()  # appended by the load's loop
        self.pending: dict[str, tuple[float, list[str]]] = {}  # probe id → (accepted, ids)
        self.accepted = 0
        self.stored = 0
        self.listable: list[float] = []
        self.seen_ids: list[str] = []
        self.missing = 0  # ids of seen requests that `verify` did not find
        self.timeline: list[tuple[float, int, int]] = []  # (time, accepted, stored)
        self.last_seen = 0.0
        self.load_done = threading.Event()
        self.deadline = float("inf")
        self.error: psycopg2.Error | None = None

    def run(self) -> None:
        try:
            self._poll()
        except psycopg2.Error as error:  # e.g. the run was interrupted and the database dropped
            self.error = error

    def _poll(self) -> None:
        connection = psycopg2.connect(self.dsn)
        connection.autocommit = True  # every query reads a fresh snapshot
        query = f"SELECT id FROM {self.table} WHERE id = ANY(%s)"
        with connection, connection.cursor() as cursor:
            while True:
                started = perf_counter()
                while self.inbox:
                    ids, accepted_at = self.inbox.popleft()
                    self.pending[ids[-1]] = (accepted_at, ids)
                    self.accepted += len(ids)
                if self.pending:
                    # Oldest first: the queue is FIFO, so the oldest pending ids land first.
                    probes = list(self.pending) if len(self.pending) <= POLL_CAP else [
                        i for i, _ in zip(self.pending, range(POLL_CAP), strict=False)]
                    cursor.execute(query, (probes,))
                    for (probe,) in cursor.fetchall():
                        accepted_at, ids = self.pending.pop(probe)
                        # Visible to a snapshot taken after `started`: listable by then.
                        self.listable.extend([max(0.0, started - accepted_at)] * len(ids))
                        self.stored += len(ids)
                        self.seen_ids.extend(ids)
                        self.last_seen = started
                self.timeline.append((started, self.accepted, self.stored))
                finished = self.load_done.is_set() and not self.inbox and not self.pending
                if finished or perf_counter() > self.deadline:
                    return
                # Keep the poller's own load small when the backlog (and so the query) is big.
                spent = perf_counter() - started
                time.sleep(max(POLL_INTERVAL_S, spent * POLL_BUDGET_FACTOR) - spent)

    def verify(self, chunk: int = 10_000) -> None:
        """After the drain (not timed): count every id of the requests seen as stored."""
        with psycopg2.connect(self.dsn) as connection, connection.cursor() as cursor:
            found = 0
            for start in range(0, len(self.seen_ids), chunk):
                cursor.execute(f"SELECT count(*) FROM {self.table} WHERE id = ANY(%s)",
                               (self.seen_ids[start:start + chunk],))
                found += cursor.fetchone()[0]
        connection.close()
        self.missing = len(self.seen_ids) - found

    def hand_over(self, ids: list[str], accepted_at: float) -> None:
        if ids:
            self.inbox.append((ids, accepted_at))


# --- A phase: load, drain, figures ---------------------------------------------------------------

@dataclass
class Phase:
    name: str
    events: int
    requests: int
    load: LoadResult
    poller: _Poller
    cores: dict[str, float]  # CPU cores busy during the load, by component
    cpu_ms: dict[str, float]  # CPU milliseconds per stored event over load + drain
    drain_cores: dict[str, float]  # CPU cores busy after the load until the last event landed
    api_check: str = ""

    @property
    def load_seconds(self) -> float:
        return self.load.finished - self.load.started

    @property
    def accepted_rate(self) -> float:
        return self.poller.accepted / self.load_seconds

    @property
    def complete(self) -> bool:
        return not self.poller.pending and not self.poller.inbox and not self.poller.missing

    @property
    def persisted_rate(self) -> float:
        if not self.complete:  # what landed by the drain deadline, over the whole wait
            return self.poller.stored / (self.poller.timeline[-1][0] - self.load.started)
        return self.poller.stored / (self.poller.last_seen - self.load.started)

    def backlog_at(self, moment: float) -> int:
        for when, accepted, stored in self.poller.timeline:
            if when >= moment:
                return accepted - stored
        return self.poller.accepted - self.poller.stored

    @property
    def backlog_end(self) -> int:
        return self.backlog_at(self.load.finished)

    @property
    def backlog_max(self) -> int:
        during = [a - s for t, a, s in self.poller.timeline if t <= self.load.finished]
        return max([*during, self.backlog_end])

    @property
    def backlog_growth(self) -> float:
        """Least-squares slope (events/s) of the backlog over the second half of the load."""
        half = self.load.started + self.load_seconds / 2
        points = [(t, a - s) for t, a, s in self.poller.timeline if half <= t <= self.load.finished]
        if len(points) < 3:
            return 0.0
        mean_t = sum(t for t, _ in points) / len(points)
        mean_b = sum(b for _, b in points) / len(points)
        spread = sum((t - mean_t) ** 2 for t, _ in points)
        return sum((t - mean_t) * (b - mean_b) for t, b in points) / spread if spread else 0.0

    @property
    def flat(self) -> bool:
        # Flat: what is left at the end drains within the 1 s listable target, and is not growing.
        return (self.backlog_end <= self.accepted_rate * TARGETS["p99_listable_s"]
                and self.backlog_growth <= 0.05 * self.accepted_rate)


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))]


def run_phase(name: str, *, port: int, dsn: str, table: str, requests: list[bytes], events: int,
              clients: int, ids_of: Callable[[bytes], list[str]], processes: Processes,
              drain_timeout: float, quiet: bool = False) -> Phase:
    """Drive the load, wait until every accepted event is listable (or the deadline), measure."""
    poller = _Poller(dsn, table)
    poller.start()
    cpu_before = cpu_seconds(processes.groups())
    load = drive(port, requests, clients,
                 lambda body, at: poller.hand_over(ids_of(body), at))
    poller.deadline = perf_counter() + drain_timeout
    poller.load_done.set()
    cpu_mid = cpu_seconds(processes.groups())
    poller.join()
    if poller.error is not None:
        raise RuntimeError(f"the poller failed: {poller.error}")
    cpu_after = cpu_seconds(processes.groups())
    drained = perf_counter()
    poller.verify()
    cores = {k: (cpu_mid[k] - cpu_before.get(k, 0.0)) / (load.finished - load.started)
             for k in cpu_mid}
    per_event = {k: (cpu_after[k] - cpu_before.get(k, 0.0)) / max(poller.stored, 1) * 1000
                 for k in cpu_after}
    drain_cores = {k: (cpu_after[k] - cpu_mid.get(k, 0.0)) / (drained - load.finished)
                   for k in cpu_after}
    for shares in (cores, per_event, drain_cores):  # other: whatever else ran (py-spy, ...)
        shares["other"] = shares["machine busy"] - sum(
            v for k, v in shares.items() if k != "machine busy")
    phase = Phase(name, events, len(requests), load, poller, cores, per_event, drain_cores)
    if not quiet:
        print(f"  {name}: {phase.accepted_rate:,.0f} accepted/s, {phase.persisted_rate:,.0f} "
              f"persisted/s, backlog at end {phase.backlog_end:,}", flush=True)
    processes.check_alive()
    return phase


# --- The run -------------------------------------------------------------------------------------

@dataclass
class Config:
    events: int
    batch_events: int
    batch_size: int
    clients: int
    warmup: int
    emails: int
    drain_timeout: float
    pg_admin: str
    database: str
    redis_url: str
    keep_database: bool
    skip_floor: bool
    profile: Path | None
    profile_phase: str
    timeline: bool = False


def recreate_database(admin_dsn: str, name: str, *, drop_only: bool = False) -> str:
    admin = psycopg2.connect(admin_dsn)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return admin_dsn.rsplit("/", 1)[0] + f"/{name}"


def kraiter_cli() -> list[str]:
    script = Path(sys.executable).parent / "kraiter"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from app.cli import main; main()"]


def single_ids(body: bytes) -> list[str]:
    return [json.loads(body)["id"]]


def batch_ids(body: bytes) -> list[str]:
    return [item["id"] for item in json.loads(body)["results"] if "id" in item]


def validation_costs(bodies: list[bytes]) -> dict[str, float]:
    """Microseconds per event to parse and check a body: the floor's check and Kraiter's schema."""
    from app.schemas.events import TrackEventSchema

    schema = TrackEventSchema()
    costs = {}
    for label, check in (("floor check", floor_check), ("Kraiter schema", schema.load)):
        started = time.process_time()
        for raw in bodies:
            check(json.loads(raw))
        costs[label] = (time.process_time() - started) / len(bodies) * 1e6
    return costs


def run_floor(config: Config, processes: Processes, dsn: str, tenant_id: str, api_key: str,
              singles: list[bytes], batches: list[bytes] | None, warmup: list[bytes],
              label: str = "floor") -> tuple[Phase, Phase | None]:
    """The floor's single phase, and its batch phase unless `batches` is None; fresh tables."""
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS floor_contacts, floor_events;"
                       "CREATE TABLE floor_contacts (LIKE contacts INCLUDING ALL);"
                       "CREATE TABLE floor_events (LIKE events INCLUDING ALL)")
    redis.Redis.from_url(config.redis_url).delete(FLOOR_QUEUE)
    port = free_port()
    floor_env = {"PORT": str(port), "BENCH_TENANT_ID": tenant_id, "BENCH_PG_DSN": dsn,
                 "BENCH_FLOOR_KEY_HASH": hashlib.sha256(api_key.encode()).hexdigest()}
    processes.start("floor-web", [sys.executable, "-m", "gunicorn", "-c",
                                  "python:app.gunicorn_conf", "bench.ingest:floor_app"], floor_env)
    processes.start("floor-consumer", [sys.executable, "-m", "bench.ingest", "--role",
                                       "floor-consumer"], floor_env)
    wait_until(lambda: http_ok(port, "/api/healthz"), "the floor web server", processes)
    try:
        common: dict[str, Any] = {"port": port, "dsn": dsn, "table": "floor_events",
                                  "clients": config.clients,
                  "processes": processes, "drain_timeout": config.drain_timeout}
        path = "/api/events"
        run_phase(f"{label} warm-up", requests=[build_request(path, port, api_key, b)
                                                for b in warmup],
                  events=len(warmup), ids_of=single_ids, quiet=True, **common)
        single = run_phase(f"{label} single", requests=[build_request(path, port, api_key, b)
                                                        for b in singles],
                           events=len(singles), ids_of=single_ids, **common)
        if batches is None:
            return single, None
        batch = run_phase(f"{label} batch", requests=[build_request(path + "/batch", port,
                                                                    api_key, b)
                                                      for b in batches],
                          events=config.batch_events, ids_of=batch_ids, **common)
        return single, batch
    finally:
        processes.stop("floor-web", "floor-consumer")


def api_check(port: int, api_key: str, ids: list[str]) -> str:
    """Fetch some of the phase's events through the API: listable means the API shows them."""
    found = sum(http_ok(port, f"/api/events/{event_id}", {"Authorization": f"Bearer {api_key}"})
                for event_id in ids)
    return f"{found}/{len(ids)} via GET /api/events/:id"


class _Profiler:
    """py-spy record on a process tree while a phase runs (only with --profile)."""

    def __init__(self, out_dir: Path | None) -> None:
        self.out_dir = out_dir
        self.running: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, targets: dict[str, int]) -> None:
        if self.out_dir is None:
            return
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in targets.items():
            out = self.out_dir / f"{name}.txt"
            self.running.append((subprocess.Popen(
                [spy, "record", "--pid", str(pid), "--subprocesses", "--gil", "--rate",
                 "100", "--format", "raw", "--output", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out))

    def stop(self) -> None:
        for process, out in self.running:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
            print(f"  profile written: {out} (collapsed stacks; top self time below)")
            print(profile_summary(out))
        self.running.clear()


def profile_summary(path: Path, top: int = 12) -> str:
    """The functions with the most samples on top of the stack (self time), idle waits dropped."""
    leaves: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        total += int(count)
        leaves[stack.rsplit(";", 1)[-1]] += int(count)
    return "\n".join(f"    {n / max(total, 1):6.1%}  {frame[:110]}"
                     for frame, n in leaves.most_common(top))


def procfile_commands() -> dict[str, str]:
    """Process type → command, from the repository's Procfile."""
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name.strip(): command.strip() for name, _, command in
            (line.partition(":") for line in lines if line.strip() and not line.startswith("#"))}


def run_kraiter(config: Config, processes: Processes, env: dict[str, str], dsn: str,
                api_key: str, singles: list[bytes], batches: list[bytes],
                warmup: list[bytes]) -> tuple[Phase, Phase]:
    port = int(env["PORT"])
    # The exact Procfile commands, run by a shell as a PaaS runs them (venv's bin first on PATH).
    procfile = procfile_commands()
    processes.start("web", ["bash", "-c", "exec " + procfile["web"]])
    processes.start("worker", ["bash", "-c", "exec " + procfile["worker"]])
    wait_until(lambda: http_ok(port, "/api/healthz"), "the web server", processes)
    wait_until(lambda: "ready." in processes.log("worker"), "the worker", processes)
    common: dict[str, Any] = {"port": port, "dsn": dsn, "table": "events",
                              "clients": config.clients,
              "processes": processes, "drain_timeout": config.drain_timeout}
    path = "/api/events"
    run_phase("warm-up", requests=[build_request(path, port, api_key, b) for b in warmup],
              events=len(warmup), ids_of=single_ids, quiet=True, **common)
    profiler = _Profiler(config.profile)
    targets = {"web": processes.children["web"].pid, "worker": processes.children["worker"].pid}
    if config.profile_phase == "single":
        profiler.start(targets)
    single = run_phase("Kraiter single", requests=[build_request(path, port, api_key, b)
                                                   for b in singles],
                       events=len(singles), ids_of=single_ids, **common)
    profiler.stop()
    if config.profile_phase == "batch":
        profiler.start(targets)
    batch = run_phase("Kraiter batch", requests=[build_request(path + "/batch", port, api_key, b)
                                                 for b in batches],
                      events=config.batch_events, ids_of=batch_ids, **common)
    profiler.stop()
    rng = random.Random(7)
    for phase in (single, batch):
        seen = phase.poller.seen_ids
        phase.api_check = api_check(port, api_key, rng.sample(seen, min(20, len(seen))))
    return single, batch


def prepare(config: Config, log_dir: Path) -> tuple[dict[str, str], str]:
    dsn = recreate_database(config.pg_admin, config.database)
    redis.Redis.from_url(config.redis_url).flushdb()
    env = {**os.environ, "DATABASE_URL": dsn, "REDIS_URL": config.redis_url,
           "SECRET_KEY": "bench-secret-not-for-production", "PORT": str(free_port()),
           "HOST": HOST, "KRAITER_DATA_DIR": str(log_dir / "data"), "EMAIL_TRANSPORT": "memory",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    return env, dsn


def run(config: Config) -> None:
    log_dir = Path(tempfile.mkdtemp(prefix="kraiter-bench-"))
    env, dsn = prepare(config, log_dir)
    processes = Processes(log_dir, env)
    print(f"logs: {log_dir}\nrelease: kraiter migrate; kraiter tenants create Bench", flush=True)
    subprocess.run([*kraiter_cli(), "migrate"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    created = subprocess.run([*kraiter_cli(), "tenants", "create", "Bench", "--json"], cwd=ROOT,
                             env=env, check=True, capture_output=True, text=True)
    tenant = json.loads(created.stdout)
    rng = random.Random(42)
    emails = [f"user{i}@bench{i % 50}.test" for i in range(config.emails)]
    encode = json.JSONEncoder(separators=(",", ":")).encode
    singles = [encode(b).encode() for b in event_bodies(config.events, emails, rng)]
    warmup = [encode(b).encode() for b in event_bodies(config.warmup, emails, rng)]
    items = list(event_bodies(config.batch_events, emails, rng))
    batches = [encode({"events": items[i:i + config.batch_size]}).encode()
               for i in range(0, len(items), config.batch_size)]
    costs = validation_costs(singles[:5000])
    try:
        floors: list[Phase | None] = []
        if not config.skip_floor:
            print("floor: same gunicorn config + tiny WSGI app (check, LPUSH) + one consumer",
                  flush=True)
            floors.extend(run_floor(config, processes, dsn, tenant["id"], tenant["apiKey"],
                                    singles, batches, warmup))
        print("Kraiter: Procfile web (gunicorn) + worker (celery)", flush=True)
        single, batch = run_kraiter(config, processes, env, dsn, tenant["apiKey"], singles,
                                    batches, warmup)
        processes.stop("web", "worker")
        if not config.skip_floor:
            # The box's speed drifts within a run: the floor's single phase once more, after
            # Kraiter's, and the ratio is taken against the mean of the two (A-B-A).
            print("floor again: single phase", flush=True)
            floors.append(run_floor(config, processes, dsn, tenant["id"], tenant["apiKey"],
                                    singles, None, warmup, label="floor again")[0])
    except (KeyboardInterrupt, SystemExit):
        print("\ninterrupted: stopping the processes and dropping the database", flush=True)
        raise
    finally:
        processes.stop()
        redis.Redis.from_url(config.redis_url).flushdb()
        if not config.keep_database:
            recreate_database(config.pg_admin, config.database, drop_only=True)
    report(config, costs, floors, single, batch)


# --- The report ----------------------------------------------------------------------------------

TIMELINE_STEP_S = 0.25


def print_timelines(phases: list[Phase]) -> None:
    """Each phase's backlog (accepted, not yet listable) every 250 ms from the start of its load:
    where a high p99 accept-to-listable came from (a stall, or a backlog that built up)."""
    print(f"\nbacklog every {TIMELINE_STEP_S * 1000:.0f} ms from the start of the load "
          "(| marks the end of the load)")
    for p in phases:
        end = p.poller.last_seen if p.complete else p.poller.timeline[-1][0]
        steps = int((end - p.load.started) / TIMELINE_STEP_S) + 1
        points = []
        for i in range(steps + 1):
            moment = p.load.started + i * TIMELINE_STEP_S
            mark = "|" if p.load.finished <= moment < p.load.finished + TIMELINE_STEP_S else ""
            points.append(f"{mark}{p.backlog_at(moment):,}")
        print(f"  {p.name}: " + " ".join(points))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def _row(cells: Iterable[str], widths: list[int]) -> str:
    return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                   strict=True)))


def report(config: Config, costs: dict[str, float], floors: list[Phase | None],
           single: Phase, batch: Phase) -> None:
    floor, floor_batch, floor_again = floors or [None, None, None]
    phases = [p for p in (floor, floor_batch, single, batch, floor_again) if p is not None]
    print(f"\nIngest benchmark: {config.clients} clients, {os.cpu_count()} CPUs, "
          f"poll every {POLL_INTERVAL_S * 1000:.0f} ms\n")
    header = ["phase", "events", "accepted/s", "persisted/s", "backlog end/max", "growth/s",
              "p50 accept", "p99 accept", "p50 listable", "p99 listable", "non-202", "retries"]
    rows = [[p.name, f"{p.events:,}", f"{p.accepted_rate:,.0f}",
             f"{p.persisted_rate:,.0f}" + ("" if p.complete else " (incomplete)"),
             f"{p.backlog_end:,}/{p.backlog_max:,}", f"{p.backlog_growth:,.0f}",
             _ms(percentile(p.load.latencies, 0.5)), _ms(percentile(p.load.latencies, 0.99)),
             _ms(percentile(p.poller.listable, 0.5)), _ms(percentile(p.poller.listable, 0.99)),
             str(sum(n for s, n in p.load.statuses.items() if s != 202)), str(p.load.retries)]
            for p in phases]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for line in [header, *rows]:
        print(_row(line, widths))
    print("(batch latencies are per 500-event request; each request is watched through its last"
          " event, then every id is checked after the drain)")
    for p in phases:
        print(f"{p.name}: {len(p.poller.seen_ids) - p.poller.missing:,} of "
              f"{len(p.poller.seen_ids):,} ids of the requests seen stored are in the table")
        if p.load.first_error:
            print(f"first error in {p.name}: {p.load.first_error}")
        if p.api_check:
            print(f"{p.name}: stored events found {p.api_check}")
    groups = sorted({k for p in phases for k in p.cores if k not in ("machine busy", "other")},
                    key=lambda k: -max(p.cores.get(k, 0.0) for p in phases))
    groups.append("other")
    header = ["CPU", *groups, "machine busy"]
    rows = []
    for p in phases:
        rows.append([f"{p.name}: cores during load",
                     *(f"{p.cores.get(k, 0.0):.2f}" for k in [*groups, "machine busy"])])
        if p.backlog_end >= p.events // 10:  # a drain long enough to say something
            rows.append([f"{p.name}: cores during drain",
                         *(f"{p.drain_cores.get(k, 0.0):.2f}" for k in [*groups, "machine busy"])])
        rows.append([f"{p.name}: ms per event, load + drain",
                     *(f"{p.cpu_ms.get(k, 0.0):.3f}" for k in [*groups, "machine busy"])])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print()
    for line in [header, *rows]:
        print(_row(line, widths))
    if config.timeline:
        print_timelines(phases)
    print("\nparse + check one event body, one core: " + ", ".join(
        f"{label} {us:.1f} µs ({1e6 / us:,.0f}/s)" for label, us in costs.items()))
    print("\ntargets")
    checks: list[tuple[str, str, str, bool | None]] = [
        ("single accepted/s", f">= {TARGETS['single_rate']:,.0f}", f"{single.accepted_rate:,.0f}",
         single.accepted_rate >= TARGETS["single_rate"]),
        ("single persisted/s", f">= {TARGETS['single_rate']:,.0f}",
         f"{single.persisted_rate:,.0f}",
         single.complete and single.persisted_rate >= TARGETS["single_rate"]),
        ("single backlog flat", "end <= 1 s of load, not growing",
         f"{single.backlog_end:,} at end, {single.backlog_growth:+,.0f}/s", single.flat),
        ("single p99 accept", f"<= {TARGETS['p99_accept_ms']:.0f} ms",
         _ms(percentile(single.load.latencies, 0.99)),
         percentile(single.load.latencies, 0.99) * 1000 <= TARGETS["p99_accept_ms"]),
        ("single p99 accept-to-listable", f"<= {TARGETS['p99_listable_s']:.0f} s",
         _ms(percentile(single.poller.listable, 0.99)),
         single.complete
         and percentile(single.poller.listable, 0.99) <= TARGETS["p99_listable_s"]),
    ]
    if floor is not None and floor_again is not None:
        for label, ours, before, after in (
                ("accepted", single.accepted_rate, floor.accepted_rate, floor_again.accepted_rate),
                ("persisted", single.persisted_rate, floor.persisted_rate,
                 floor_again.persisted_rate)):
            base = (before + after) / 2
            ratio = ours / base
            checks.append((f"single {label} / floor", f">= {TARGETS['floor_ratio']}",
                           f"{ratio:.2f} ({ours:,.0f} / mean of {before:,.0f}, {after:,.0f})",
                           ratio >= TARGETS["floor_ratio"]))
    checks.append(("batch end to end/s", f">= {TARGETS['batch_rate']:,.0f}",
                   f"{batch.persisted_rate:,.0f}",
                   batch.complete and batch.persisted_rate >= TARGETS["batch_rate"]))
    if floor_batch is not None:
        checks.append(("(floor batch end to end/s)", "for reference",
                       f"{floor_batch.persisted_rate:,.0f}", None))
    widths = [max(len(str(c[i])) for c in checks) for i in range(3)]
    for label, target, measured, ok in checks:
        print(f"  {label.ljust(widths[0])}  {target.ljust(widths[1])}  "
              f"{measured.rjust(widths[2])}  {'' if ok is None else 'ok' if ok else 'MISS'}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000, help="single events (default 20000)")
    parser.add_argument("--batch-events", type=int, default=100_000,
                        help="events sent through POST /api/events/batch (default 100000)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=1000, help="events sent before measuring")
    parser.add_argument("--emails", type=int, default=10_000, help="distinct contacts")
    parser.add_argument("--drain-timeout", type=float, default=180.0,
                        help="seconds to wait after the load for events to be listable")
    parser.add_argument("--pg-admin", default=os.environ.get(
        "KRAITER_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--database", default="kraiter_bench",
                        help="dropped and created afresh (default kraiter_bench)")
    parser.add_argument("--redis-url", default=os.environ.get(
        "KRAITER_BENCH_REDIS", "redis://127.0.0.1:6379/7"), help="its db is flushed")
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument("--profile", type=Path, help="py-spy a phase into this folder")
    parser.add_argument("--profile-phase", choices=["single", "batch"], default="single",
                        help="the phase --profile records (default single)")
    parser.add_argument("--timeline", action="store_true",
                        help="also print each phase's backlog every 250 ms")
    parser.add_argument("--role", choices=["floor-consumer"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.role == "floor-consumer":
        run_floor_consumer()
        return
    sys.path.insert(0, str(ROOT))  # `python bench/ingest.py` puts bench/, not the root, on the path
    # SIGTERM ends the run like Ctrl-C does, so the `finally` that stops the children runs; and
    # Ctrl-C works even when the shell started us with SIGINT ignored (a background job).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run(Config(events=args.events, batch_events=args.batch_events,
                   batch_size=args.batch_size, clients=args.clients, warmup=args.warmup,
                   emails=args.emails, drain_timeout=args.drain_timeout, pg_admin=args.pg_admin,
                   database=args.database, redis_url=args.redis_url,
                   keep_database=args.keep_database, skip_floor=args.skip_floor,
                   profile=args.profile, profile_phase=args.profile_phase,
                   timeline=args.timeline))
    except KeyboardInterrupt:
        sys.exit(130)  # the children are stopped already; no traceback for a Ctrl-C


if __name__ == "__main__":
    main()
