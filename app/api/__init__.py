"""The HTTP API: one blueprint, served under `/api` and, for the guides' paths, without it."""

from __future__ import annotations

from flask import Flask


def register_api(app: Flask) -> None:
    """Import the view modules (which attach routes to the blueprint) and mount it twice."""
    from app.api import contacts  # noqa: F401
    from app.api import events  # noqa: F401
    from app.api import keys  # noqa: F401
    from app.api import meta  # noqa: F401
    from app.api import metrics  # noqa: F401
    from app.api import ops  # noqa: F401
    from app.api import sends  # noqa: F401
    from app.api import sequences  # noqa: F401
    from app.api import stream  # noqa: F401
    from app.api import templates  # noqa: F401
    from app.api import tracking  # noqa: F401
    from app.api import webhooks  # noqa: F401
    from app.api.blueprint import api
    from app.api.blueprint import public

    app.register_blueprint(api, url_prefix="/api")
    app.register_blueprint(api, url_prefix="", name="api_unprefixed")
    app.register_blueprint(public)
