"""Send benchmark: e-mails rendered and handed to a local SMTP sink per second by ONE worker.

Run `.venv/bin/python bench/send.py` (PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379,
as for the other benchmarks; `--embedded` uses SQLite and the embedded broker instead).

What it does:

1. makes a fresh database (`kraiter_bench_send`, wiped) and Redis db 6 (flushed), applies the
   migrations, and creates a tenant, a realistic transactional template (1.7 KB of HTML with a
   Liquid loop over the order's items, seven links and the unsubscribe link) and `--sends`
   contacts with one `queued` send each, as `POST /api/send` leaves them (a `--stages` batch
   more is made later);
2. starts the SMTP sink, `python -m tests.smtp_server` (aiosmtpd, its own process: it accepts
   every message with a `250 ... queued as <id>` and keeps only a count);
3. enqueues the deliveries, `--batch` sends per `sends.deliver_many` message (`--batch 1`: one
   `sends.deliver` message per send, exactly what `POST /api/send` enqueues);
4. starts ONE worker process, `celery -A tasks.worker worker --pool <pool>` (threads
   by default: one process whose threads overlap their waits on the database and the SMTP
   server), and waits until every send is `sent`.

The rate is measured from the database: the sends' `sent_at` timestamps, from the
`--warmup`-th to the last, so the worker's start-up does not count. Every send goes through
the real path: read and render (python-liquid), tracking (link rewriting, open pixel, three
signed tokens), headers (`Message-ID`, `X-Kraiter-Send-Id`, `List-Unsubscribe`,
`List-Unsubscribe-Post`), claim committed before SMTP, MAIL/RCPT/DATA on a kept-open
connection, and `email.sent` recorded through the lifecycle (with its event and triggers).

Where the time goes: after the run, `--stages N` more sends are delivered in this process with
each stage timed in CPU (thread) time, the same code the worker runs. `--profile DIR` also runs
py-spy on the worker (`--gil`: CPU only) and prints the frames with the most self time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import Processes  # noqa: E402  (the benchmarks share their process plumbing)
from bench.ingest import cpu_seconds  # noqa: E402
from bench.ingest import profile_summary  # noqa: E402
from bench.ingest import recreate_database  # noqa: E402

TARGET_RATE = 300.0
# A queue of its own: another worker on the same Redis (a test run, another benchmark) must
# neither take these deliveries nor hand this worker its own.
QUEUE = f"email-bench-{os.getpid()}"
ITEMS = [{"name": "Espresso beans, 1 kg", "quantity": 2, "price": "24.00"},
         {"name": "Ceramic dripper", "quantity": 1, "price": "18.50"},
         {"name": "Paper filters (100)", "quantity": 3, "price": "4.20"}]
TEMPLATE_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>Your order {{ orderId }}</title>
<style>body{font-family:Helvetica,Arial,sans-serif;color:#222}td{padding:4px 8px}</style></head>
<body>
<table width="100%" cellpadding="0" cellspacing="0"><tr><td align="center">
<table width="600" cellpadding="0" cellspacing="0">
<tr><td><a href="https://shop.example/?utm_source=mail"><img src="https://shop.example/logo.png"
 alt="Shop" width="120"></a></td></tr>
<tr><td><h1>Thanks for your order, {{ firstName | default: "there" }}!</h1>
<p>We have received order <strong>{{ orderId }}</strong> and will let you know when it ships.
You can follow it at any time on <a href="https://shop.example/orders/{{ orderId }}">your order
page</a>.</p></td></tr>
<tr><td><table width="100%">
<tr><th align="left">Item</th><th>Qty</th><th align="right">Price</th></tr>
{% for item in variables.items %}<tr><td>{{ item.name }}</td><td align="center">{{ item.quantity
}}</td><td align="right">{{ item.price }} EUR</td></tr>
{% endfor %}</table></td></tr>
<tr><td><p>Shipping to: {{ contact.properties.city | default: "your address" }}</p>
<p>Questions? Read the <a href="https://shop.example/help/shipping">shipping FAQ</a> or
<a href="https://shop.example/contact?order={{ orderId }}">contact us</a>.</p>
<p>Follow us: <a href="https://social.example/shop">Social</a> ·
<a href="https://blog.shop.example/">Blog</a></p></td></tr>
<tr><td style="font-size:12px;color:#888"><p>Shop Ltd, 1 Example Street, Exampleton.
You receive this e-mail because you ordered from us.
<a href="{{ unsubscribeUrl }}">Unsubscribe</a>.</p></td></tr>
</table></td></tr></table>
</body></html>
"""


@dataclass(frozen=True)
class Config:
    sends: int
    warmup: int
    batch: int
    pool: str
    concurrency: int
    stages: int
    embedded: bool
    database: str
    redis_url: str
    pg_admin: str
    keep_database: bool
    profile: Path | None


def _env(config: Config, data_dir: Path, smtp_port: int) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KRAITER_DATA_DIR": str(data_dir),
           "SECRET_KEY": "bench-secret", "PUBLIC_URL": "https://mail.shop.example",
           "EMAIL_TRANSPORT": "smtp", "SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
           "EMAIL_FROM": "Shop <orders@shop.example>"}
    for name in ("DATABASE_URL", "REDIS_URL"):
        env.pop(name, None)
    if not config.embedded:
        env["DATABASE_URL"] = recreate_database(config.pg_admin, config.database)
        env["REDIS_URL"] = config.redis_url
        import redis

        redis.Redis.from_url(config.redis_url).flushdb()
    return env


def _seed(count: int, tenant_id: str | None = None) -> tuple[str, list[str]]:
    """A tenant (unless given), the template, and `count` contacts with one queued send each."""
    from app import db
    from app.models import Template
    from app.services import ingest
    from app.services import sending
    from app.services import tenants
    from app.timeutil import utcnow

    with db.transaction() as session:
        if tenant_id is None:
            tenant, _key = tenants.create_tenant(session, name="Bench shop", retention_days=365)
            tenant_id = tenant.id
            now = utcnow()
            session.add(Template(tenant_id=tenant_id, id="order-confirmation", name="Order",
                                 subject="Your order {{ orderId }} is confirmed",
                                 html=TEMPLATE_HTML, mjml=None, text=None, version=1,
                                 created_at=now, updated_at=now))
        stamp = time.time_ns()
        emails = [f"customer{stamp}-{i}@example.com" for i in range(count)]
        contacts = ingest.upsert_contacts(session, tenant_id=tenant_id, emails=emails)
        send_ids = [sending.create_send(
            session, tenant_id=tenant_id, contact_id=contacts[email], email=email,
            template_id="order-confirmation",
            variables={"orderId": f"A-{i:06d}", "firstName": f"Customer {i}", "items": ITEMS}).id
            for i, email in enumerate(emails)]
    with db.get_engine().connect() as connection:  # fresh statistics for the planner
        connection.exec_driver_sql("ANALYZE")
        connection.commit()
    return tenant_id, send_ids


def _enqueue(send_ids: list[str], batch: int) -> float:
    from tasks.sends import deliver
    from tasks.sends import deliver_many

    started = time.perf_counter()
    for start in range(0, len(send_ids), batch):
        chunk = send_ids[start:start + batch]
        if batch == 1:
            deliver.apply_async(args=(chunk[0],), queue=QUEUE)
        else:
            deliver_many.apply_async(args=(chunk,), queue=QUEUE)
    return time.perf_counter() - started


def _sent_times(send_ids: list[str]) -> list[float]:
    from sqlalchemy import select

    from app import db
    from app.models import Send

    with db.transaction() as session:
        stamps = session.scalars(select(Send.sent_at).where(Send.id.in_(send_ids),
                                                             Send.status == "sent"))
        return sorted(stamp.timestamp() for stamp in stamps if stamp is not None)


def _statuses(send_ids: list[str]) -> dict[str, int]:
    from sqlalchemy import func
    from sqlalchemy import select

    from app import db
    from app.models import Send

    with db.transaction() as session:
        rows = session.execute(select(Send.status, func.count()).where(
            Send.id.in_(send_ids)).group_by(Send.status))
        return {row[0]: int(row[1]) for row in rows}


def _events_sent(tenant_id: str) -> int:
    from sqlalchemy import func
    from sqlalchemy import select

    from app import db
    from app.models import Event

    with db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(Event).where(
            Event.tenant_id == tenant_id, Event.name == "email.sent")) or 0)


def _worker_command(config: Config) -> list[str]:
    command = [sys.executable, "-m", "celery", "-A", "tasks.worker", "worker", "-Q", QUEUE,
               "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--pool",
               config.pool]
    if config.pool != "solo":
        command += ["--concurrency", str(config.concurrency)]
    return command


def _profile(config: Config, pid: int) -> subprocess.Popen[bytes] | None:
    if config.profile is None:
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    config.profile.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--subprocesses", "--gil",
                             "--rate", "200", "--format", "raw", "--output",
                             str(config.profile / "worker.txt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_worker_phase(config: Config, processes: Processes, send_ids: list[str],
                     tenant_id: str) -> None:
    enqueue_s = _enqueue(send_ids, config.batch)
    print(f"enqueued {len(send_ids)} sends in {enqueue_s:.1f} s "
          f"({'one sends.deliver each' if config.batch == 1 else f'{config.batch} per message'})")
    worker = processes.start("worker", _worker_command(config))
    spy = _profile(config, worker.pid)
    deadline = time.monotonic() + max(120.0, len(send_ids) / 20)
    done, done_before = 0, 0
    before: dict[str, float] = {}
    while done < len(send_ids) and time.monotonic() < deadline:
        processes.check_alive()
        time.sleep(0.25)
        done = sum(count for status, count in _statuses(send_ids).items() if status != "queued"
                   and status != "sending")
        if not before and done >= config.warmup:  # CPU is counted from here: no start-up
            before, done_before = cpu_seconds(processes.groups()), done
    after = cpu_seconds(processes.groups())
    if done < len(send_ids):
        print("the worker did not finish; the end of its log:\n" + processes.log("worker")[-3000:])
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)
    processes.stop("worker")
    _report(config, send_ids, tenant_id, before, after, done - done_before)


def _report(config: Config, send_ids: list[str], tenant_id: str, before: dict[str, float],
            after: dict[str, float], counted: int) -> None:
    statuses = _statuses(send_ids)
    times = _sent_times(send_ids)
    measured = times[config.warmup:]
    rate = (len(measured) - 1) / (measured[-1] - measured[0]) if len(measured) > 1 else 0.0
    print(f"\nstatuses: {statuses}; email.sent events: {_events_sent(tenant_id)}")
    pool = config.pool if config.pool == "solo" else f"{config.pool} x{config.concurrency}"
    print(f"ONE worker process ({pool}): {rate:,.0f} e-mails/s rendered, tracked and handed "
          f"to the SMTP sink (sends {config.warmup + 1}..{len(times)}, from sent_at)")
    print(f"CPU ms per e-mail, the last {counted} sends (after the warm-up):")
    for name in ("worker", "sink", "postgres", "redis", "machine busy"):
        used = after.get(name, 0.0) - before.get(name, 0.0)
        print(f"  {name:<13} {used / max(counted, 1) * 1000:6.2f}")
    busy = (after["machine busy"] - before.get("machine busy", 0.0)) / max(counted, 1)
    print(f"  (the box has {os.cpu_count()} cores: at {rate:,.0f}/s it was "
          f"{busy * rate / (os.cpu_count() or 1):.0%} busy; 'machine busy' includes other "
          "processes on it)")
    verdict = "meets" if rate >= TARGET_RATE else "MISSES"
    print(f"target >= {TARGET_RATE:.0f}/s: {verdict}")
    if config.profile is not None and (config.profile / "worker.txt").exists():
        print(f"\npy-spy (--gil) self time in the worker, {config.profile / 'worker.txt'}:")
        print(profile_summary(config.profile / "worker.txt", top=20))


# --- where the time goes: the same path in this process, each stage timed ------------------------

STAGES = (
    ("app.services.sending", "prepare_sends", "read + render + track + build (per batch)"),
    ("app.services.rendering", "render_email", "  Liquid render (python-liquid)"),
    ("app.services.tracking", "instrument_html", "  link rewriting + open pixel"),
    ("app.services.sending", "build_message", "  MIME message"),
    ("app.services.sending", "claim_sends", "claim (UPDATE per send, commit per group)"),
    ("app.services.sending", "transmit", "SMTP MAIL/RCPT/DATA"),
    ("app.services.sending", "record_outcomes", "record outcomes (lock, lifecycle, UPDATE)"),
    ("app.services.lifecycle", "mark_sent", "  lifecycle.mark_sent"),
    ("app.services.ingest", "store_events", "  ingest.store_events (email.sent, per group)"),
)


@contextlib.contextmanager
def _timed_stages(totals: dict[str, list[float]]) -> Iterator[None]:
    """Wrap each stage function with a wall and CPU (thread time) stopwatch while active."""
    import importlib

    originals: list[tuple[Any, str, Callable[..., Any]]] = []
    for module_name, attribute, label in STAGES:
        module = importlib.import_module(module_name)
        original = getattr(module, attribute)

        def timed(*args: Any, __original: Any = original, __label: str = label,
                  **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return __original(*args, **kwargs)
            finally:
                totals[__label][0] += time.perf_counter() - wall
                totals[__label][1] += time.thread_time() - cpu

        originals.append((module, attribute, original))
        setattr(module, attribute, timed)
    try:
        yield
    finally:
        for module, attribute, original in originals:
            setattr(module, attribute, original)


def run_stage_breakdown(config: Config, tenant_id: str) -> None:
    from app.config import Settings
    from app.transports import get_transport
    from tasks.sends import deliver_sends

    settings = Settings.from_env()
    transport = get_transport(settings)
    _tenant, send_ids = _seed(config.stages + 100, tenant_id)
    batch = max(config.batch, 1)

    def deliver(ids: list[str]) -> None:
        for start in range(0, len(ids), batch):
            deliver_sends(ids[start:start + batch], settings=settings, transport=transport)

    deliver(send_ids[:100])  # warm: imports, template cache, SMTP connection
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    measured = send_ids[100:]
    wall, cpu = time.perf_counter(), time.thread_time()
    with _timed_stages(totals):
        deliver(measured)
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    count = len(measured)
    print(f"\nwhere the time goes: {count} sends delivered serially in this process "
          f"(batches of {batch}), ms per e-mail")
    print(f"  {'stage':<46} {'wall':>6} {'CPU':>6}")
    for _module, _attribute, label in STAGES:
        spent_wall, spent_cpu = totals[label]
        print(f"  {label:<46} {spent_wall / count * 1000:6.2f} {spent_cpu / count * 1000:6.2f}")
    print(f"  {'total (serial, one thread)':<46} {wall / count * 1000:6.2f} "
          f"{cpu / count * 1000:6.2f}")
    print(f"  serial rate {count / wall:,.0f}/s; CPU-bound ceiling of one process "
          f"{count / cpu:,.0f}/s (Celery's own cost not included)")
    transport.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sends", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--batch", type=int, default=100,
                        help="sends per task message (1: one sends.deliver per send)")
    parser.add_argument("--pool", choices=("threads", "solo", "prefork"), default="threads")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="threads of the one worker process (prefork: child processes)")
    parser.add_argument("--stages", type=int, default=1000,
                        help="sends for the in-process stage breakdown (0: skip)")
    parser.add_argument("--embedded", action="store_true",
                        help="SQLite and the embedded broker instead of PostgreSQL and Redis")
    parser.add_argument("--database", default="kraiter_bench_send")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/6")
    parser.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args()
    config = Config(sends=args.sends, warmup=min(args.warmup, args.sends // 2),
                    batch=max(1, args.batch), pool=args.pool, concurrency=args.concurrency,
                    stages=args.stages, embedded=args.embedded, database=args.database,
                    redis_url=args.redis_url, pg_admin=args.pg_admin,
                    keep_database=args.keep_database, profile=args.profile)
    run(config)


def run(config: Config) -> None:
    from tests.smtp_server import free_port

    data_dir = Path(tempfile.mkdtemp(prefix="kraiter-bench-send-"))
    log_dir = data_dir / "logs"
    log_dir.mkdir()
    smtp_port = free_port()
    env = _env(config, data_dir, smtp_port)
    os.environ.update(env)
    processes = Processes(log_dir, env)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        from app import create_app
        from app.config import Settings
        from app.migrate import upgrade

        settings = Settings.from_env()
        upgrade(settings.database_url)
        create_app(settings)  # wires the database and Celery for enqueueing from here
        processes.start("sink", [sys.executable, "-m", "tests.smtp_server", "--port",
                                 str(smtp_port)])
        time.sleep(1.0)
        tenant_id, send_ids = _seed(config.sends)
        print(f"seeded {len(send_ids)} queued sends ({len(TEMPLATE_HTML)} bytes of template "
              f"HTML); logs in {log_dir}")
        run_worker_phase(config, processes, send_ids, tenant_id)
        if config.stages:
            run_stage_breakdown(config, tenant_id)
    finally:
        processes.stop()
        if not config.embedded and not config.keep_database:
            from app import db

            with contextlib.suppress(RuntimeError):
                db.get_engine().dispose()
            recreate_database(config.pg_admin, config.database, drop_only=True)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
