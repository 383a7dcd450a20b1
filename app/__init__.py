"""Kraiter: the Flask application factory (wiring only)."""

from __future__ import annotations

from typing import Any

from flask import Flask

from app.config import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app: settings → database → Celery → errors → routes → ingest publisher → the
    single-event fast path in front of it all."""
    from app import db
    from app import observability
    from app.api import register_api
    from app.api.events_fast_path import EventFastPath
    from app.config import celery_config
    from app.dashboard.views import dashboard
    from app.errors import register_error_handlers
    from app.ingest_batcher import IngestBatcher
    from app.ingest_ledger import ledger_for
    from app.json_codec import JSONProvider
    from app.live_feed import FeedHub
    from tasks.celery_app import celery_init_app
    from tasks.events import publish_ingest

    settings = settings or Settings.from_env()
    app = Flask(__name__, static_folder=None)
    app.json = JSONProvider(app)
    app.config.update(SETTINGS=settings, CELERY=celery_config(settings),
                      MAX_CONTENT_LENGTH=settings.max_batch_body_bytes)
    observability.init_app(app)  # JSON logs first, so every later line is JSON too

    db.init_engine(settings.database_url)

    @app.teardown_appcontext
    def _remove_session(_exc: BaseException | None) -> None:
        db.remove_session()

    celery_init_app(app)
    register_error_handlers(app)
    register_api(app)
    app.register_blueprint(dashboard)

    ledger = app.extensions["ingest_ledger"] = ledger_for(settings.redis_url)

    def publish(messages: list[dict[str, Any]]) -> None:
        publish_ingest(ledger, messages)

    app.extensions["live_feed"] = FeedHub(poll_interval=settings.stream_poll_ms / 1000,
                                          max_streams=settings.max_streams)
    app.extensions["ingest_batcher"] = IngestBatcher(
        publish, max_batch=settings.ingest_max_batch, linger_s=settings.ingest_linger_ms / 1000,
        timeout_s=settings.ingest_publish_timeout_s, linger_only_for_expected=True)
    app.wsgi_app = EventFastPath(app, app.wsgi_app)  # type: ignore[method-assign]
    return app
