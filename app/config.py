"""Every setting, read from the environment once, with defaults and validation."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

log = logging.getLogger(__name__)

KIB = 1024


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


def _csv(env: dict[str, str], name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None


def _log_level(env: dict[str, str]) -> str:
    level = (env.get("LOG_LEVEL") or "INFO").strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise SystemExit(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, "
                         f"got {level!r}")
    return level


def _basic_auth(env: dict[str, str], name: str) -> str | None:
    raw = env.get(name) or None
    if raw is not None and ":" not in raw:
        raise SystemExit(f"{name} must be user:password")
    return raw


def normalise_database_url(url: str) -> str:
    """Accept Heroku-style `postgres://` and pin psycopg2 (SQLAlchemy 2.1 defaults to psycopg 3)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def _secret_keys(env: dict[str, str], data_dir: Path) -> tuple[str, ...]:
    raw = env.get("SECRET_KEY", "")
    keys = tuple(k.strip() for k in raw.split(",") if k.strip())
    if keys:
        return keys
    # Embedded mode keeps a generated key in the data folder so tokens survive restarts. Outside
    # it, web and worker processes on different machines must share one key (links signed by a
    # worker are checked by the web), so the contract makes it required.
    if env.get("REDIS_URL") or not database_url_from_env(env).startswith("sqlite"):
        raise SystemExit("SECRET_KEY must be set when DATABASE_URL or REDIS_URL is: every "
                         "process must sign and check links with the same key.")
    path = data_dir / "secret_key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return (path.read_text().strip(),)


def data_dir_from_env(env: dict[str, str]) -> Path:
    """The embedded-mode data folder."""
    return Path(env.get("KRAITER_DATA_DIR") or ".kraiter").resolve()


def database_url_from_env(env: dict[str, str]) -> str:
    """DATABASE_URL, normalised, or the embedded SQLite file."""
    url = env.get("DATABASE_URL") or f"sqlite:///{data_dir_from_env(env) / 'kraiter.db'}"
    return normalise_database_url(url)


DEFAULT_MAX_STREAMS = 100


def stream_slots(env: Mapping[str, str]) -> int:
    """Live-feed streams one web process serves at once (`KRAITER_MAX_STREAMS`)."""
    return max(1, _int(dict(env), "KRAITER_MAX_STREAMS", DEFAULT_MAX_STREAMS))


@dataclass(frozen=True)
class Settings:
    """The process configuration. Build it with `Settings.from_env()`."""

    database_url: str
    broker_url: str
    redis_url: str | None
    data_dir: Path
    secret_keys: tuple[str, ...]
    public_url: str
    email_transport: str
    smtp_url: str | None
    email_from: str
    max_body_bytes: int = 256 * KIB
    max_batch_body_bytes: int = 256 * KIB  # the contract: "default 256 KiB" for every body
    ingest_linger_ms: int = 10
    ingest_max_batch: int = 500
    ingest_publish_timeout_s: int = 10
    broker_visibility_timeout_s: int = 900
    # An ingest message still unstored this long after publishing is published again (see
    # app.ingest_ledger); longer than the visibility timeout, after which the broker itself
    # redelivers a message a dead worker held.
    ingest_requeue_after_s: int = 960
    ingest_sweep_interval_s: int = 30
    archive_interval_s: int = 600
    archive_batch_size: int = 5000
    idempotency_ttl_s: int = 24 * 3600
    # SES feedback through SNS: topics we accept (empty: any, with a warning) and the hosts that
    # may serve signing certificates and subscription links (`*` is one DNS label).
    ses_sns_topic_arns: tuple[str, ...] = ()
    ses_sns_trusted_hosts: tuple[str, ...] = ("sns.*.amazonaws.com",)
    smtp_timeout_s: float = 30.0
    # Sending: attempts per send for transient failures (4xx, connection errors), the first retry
    # delay (doubled each time), when a send stuck in `sending` counts as interrupted, and when a
    # `queued` send with no task in sight is enqueued again.
    send_max_attempts: int = 5
    send_retry_base_s: float = 60.0
    send_stale_after_s: int = 600
    send_requeue_after_s: int = 60
    send_sweep_interval_s: int = 60
    # Sends claimed (and later recorded) per transaction by a delivering worker. A worker killed
    # mid-group leaves up to this many sends `failed` as interrupted, some of which went out; 1
    # narrows that to the one in flight, for about 40 % less throughput (bench/send.py).
    send_claim_group: int = 10
    # Sequences: steps due within `sequence_fast_path_s` also go to Celery with an ETA; the beat
    # sweeper runs every `sequence_sweep_interval_s`, claims rows due within twice that, and
    # re-enqueues a step whose task has not run `sequence_requeue_after_s` after it fell due.
    sequence_fast_path_s: int = 300
    sequence_sweep_interval_s: float = 5.0
    sequence_requeue_after_s: int = 60
    sequence_sweep_batch: int = 500
    # Operations: level of the app's JSON logs, and `user:pass` guarding GET /metrics (None: open).
    log_level: str = "INFO"
    # Live feed: open streams a web process serves (each holds a thread, on top of WEB_THREADS),
    # how often it polls for new events, and the heartbeat interval.
    max_streams: int = DEFAULT_MAX_STREAMS
    stream_poll_ms: int = 250
    stream_heartbeat_s: float = 10.0
    metrics_basic_auth: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def embedded_database(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def embedded_broker(self) -> bool:
        return self.redis_url is None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Read the settings from `env` (default: the process environment)."""
        env = dict(os.environ if env is None else env)
        data_dir = data_dir_from_env(env)
        redis_url = env.get("REDIS_URL") or None
        broker_url = redis_url or f"kraiter-sqlite://{data_dir / 'broker.db'}"
        port = env.get("PORT", "8000")
        transport = env.get("EMAIL_TRANSPORT", "file")
        visibility_timeout = _int(env, "KRAITER_BROKER_VISIBILITY_TIMEOUT", 900)
        if transport not in {"smtp", "file", "console", "memory"}:
            raise SystemExit(
                f"EMAIL_TRANSPORT must be smtp, file, console or memory, got {transport!r}")
        return cls(
            database_url=database_url_from_env(env),
            broker_url=broker_url,
            redis_url=redis_url,
            data_dir=data_dir,
            secret_keys=_secret_keys(env, data_dir),
            public_url=(env.get("PUBLIC_URL") or f"http://localhost:{port}").rstrip("/"),
            email_transport=transport,
            smtp_url=env.get("SMTP_URL") or None,
            email_from=env.get("EMAIL_FROM") or "Kraiter <no-reply@localhost>",
            max_body_bytes=_int(env, "KRAITER_MAX_BODY_BYTES", 256 * KIB),
            max_batch_body_bytes=_int(env, "KRAITER_MAX_BATCH_BODY_BYTES", 256 * KIB),
            ingest_linger_ms=_int(env, "KRAITER_INGEST_LINGER_MS", 10),
            ingest_max_batch=_int(env, "KRAITER_INGEST_MAX_BATCH", 500),
            broker_visibility_timeout_s=visibility_timeout,
            ingest_requeue_after_s=_int(env, "KRAITER_INGEST_REQUEUE_AFTER",
                                        visibility_timeout + 60),
            ingest_sweep_interval_s=_int(env, "KRAITER_INGEST_SWEEP_INTERVAL", 30),
            archive_interval_s=_int(env, "KRAITER_ARCHIVE_INTERVAL", 600),
            archive_batch_size=_int(env, "KRAITER_ARCHIVE_BATCH_SIZE", 5000),
            smtp_timeout_s=_float(env, "SMTP_TIMEOUT", 30.0),
            send_max_attempts=max(1, _int(env, "KRAITER_SEND_MAX_ATTEMPTS", 5)),
            send_retry_base_s=_float(env, "KRAITER_SEND_RETRY_BASE", 60.0),
            send_stale_after_s=_int(env, "KRAITER_SEND_STALE_AFTER", 600),
            send_requeue_after_s=_int(env, "KRAITER_SEND_REQUEUE_AFTER", 60),
            send_sweep_interval_s=_int(env, "KRAITER_SEND_SWEEP_INTERVAL", 60),
            send_claim_group=max(1, _int(env, "KRAITER_SEND_CLAIM_GROUP", 10)),
            ses_sns_topic_arns=_csv(env, "SES_SNS_TOPIC_ARNS"),
            ses_sns_trusted_hosts=(_csv(env, "SES_SNS_TRUSTED_HOSTS")
                                   or ("sns.*.amazonaws.com",)),
            sequence_fast_path_s=_int(env, "KRAITER_SEQUENCE_FAST_PATH", 300),
            sequence_sweep_interval_s=_float(env, "KRAITER_SEQUENCE_SWEEP_INTERVAL", 5.0),
            sequence_requeue_after_s=_int(env, "KRAITER_SEQUENCE_REQUEUE_AFTER", 60),
            sequence_sweep_batch=max(1, _int(env, "KRAITER_SEQUENCE_SWEEP_BATCH", 500)),
            log_level=_log_level(env),
            max_streams=stream_slots(env),
            stream_poll_ms=max(10, _int(env, "KRAITER_STREAM_POLL_MS", 250)),
            stream_heartbeat_s=min(15.0, _float(env, "KRAITER_STREAM_HEARTBEAT", 10.0)),
            metrics_basic_auth=_basic_auth(env, "METRICS_BASIC_AUTH"),
        )


def celery_config(settings: Settings) -> dict[str, object]:
    """Celery's settings, derived from ours. Tasks are idempotent, so delivery is at least once."""
    from kombu.entity import Queue as KombuQueue

    transport_options: dict[str, object] = {
        "visibility_timeout": settings.broker_visibility_timeout_s,
    }
    if not settings.embedded_broker:
        # kombu scans for unacked messages of dead workers every 10 s but, by default, only acts
        # on every tenth scan; act on each, so a crashed worker's batches return soon after the
        # visibility timeout rather than minutes later.
        # The restore scan runs under a Redis lock that outlives a SIGKILLed holder for
        # `unacked_mutex_expire` (kombu default 300 s); a scan takes milliseconds, so a minute
        # is plenty and keeps a crash from delaying recovery by five.
        transport_options.update(socket_timeout=30, socket_connect_timeout=10,
                                 health_check_interval=25, unacked_restore_throttle=1,
                                 unacked_mutex_expire=60)
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json", "orjson"],  # orjson: ingest messages (tasks/serialization.py)
        "task_default_queue": "default",
        "task_queues": [KombuQueue(name)  # type: ignore[no-untyped-call]
                        for name in ("ingest", "email", "default", "maintenance")],
        "task_acks_late": True,
        # A pool child killed mid-task (OOM, SIGKILL) re-sends its message, bounded by max_retries.
        "task_retry_on_worker_lost": True,
        "task_time_limit": 300,
        "task_soft_time_limit": 240,
        # Two batches of INGEST_FLUSH_EVERY ingest messages (tasks/events.py) in flight at the
        # default concurrency of 2 (a worker reserves up to this many messages per pool process).
        "worker_prefetch_multiplier": 8,
        "worker_soft_shutdown_timeout": 20,
        "worker_enable_soft_shutdown_on_idle": True,
        "include": ["tasks.events", "tasks.retention", "tasks.sends", "tasks.sequences"],
        "beat_schedule": {
            "archive-events": {"task": "events.archive",
                               "schedule": float(settings.archive_interval_s)},
            "purge-idempotency-keys": {"task": "idempotency.purge", "schedule": 3600.0},
            "purge-webhook-deliveries": {"task": "webhooks.purge_deliveries",
                                         "schedule": 3600.0},
            "sweep-stale-sends": {"task": "sends.sweep_stale",
                                  "schedule": float(settings.send_sweep_interval_s)},
            "requeue-lost-events": {"task": "events.requeue_lost",
                                    "schedule": float(settings.ingest_sweep_interval_s)},
            "requeue-lost-sends": {"task": "sends.requeue_lost",
                                   "schedule": float(settings.send_sweep_interval_s)},
            "sweep-sequence-steps": {"task": "sequences.sweep",
                                     "schedule": settings.sequence_sweep_interval_s},
        },
    }
