"""E-mail metrics (Analytics guide): tenant-wide, per sequence, per template.

`GET /metrics` is also where Prometheus scrapes, so at the root a request without an API key and
without metrics parameters gets the Prometheus exposition (app.api.ops) instead of a 401.
"""

from __future__ import annotations

from typing import Any

from flask import g
from flask import request

from app import db
from app.api import ops
from app.api.blueprint import api
from app.api.blueprint import document
from app.auth import require_api_key
from app.errors import NotFound
from app.schemas.metrics import MetricsQuery
from app.schemas.metrics import MetricsSchema
from app.services import metrics

_query = MetricsQuery()
MAX_ID_LENGTH = 200


def _is_prometheus_scrape() -> bool:
    scheme = request.headers.get("Authorization", "").partition(" ")[0].lower()
    return (request.blueprint == "api_unprefixed" and scheme != "bearer"
            and not any(name in request.args for name in ("period", "from", "to")))


def _known_id(kind: str, value: str) -> str:
    # No template or sequence id holds NUL or is this long; PostgreSQL refuses NUL outright.
    if "\x00" in value or len(value) > MAX_ID_LENGTH:
        raise NotFound(f"{kind} {value!r} not found.")
    return value


document("/metrics", "get", "E-mail metrics of the tenant", tag="metrics", query=MetricsQuery,
         response=MetricsSchema)


@api.get("/metrics")
def tenant_metrics() -> Any:
    """The tenant's e-mail metrics; at the root without a key, the Prometheus exposition."""
    if _is_prometheus_scrape():
        return ops.prometheus_metrics()
    return _tenant_metrics()


@require_api_key
def _tenant_metrics() -> Any:
    window = _query.load(request.args)
    return metrics.email_metrics(db.session, tenant_id=g.tenant_id, window=window)


document("/metrics/sequences/{id}", "get", "E-mail metrics of one sequence's sends",
         tag="metrics", query=MetricsQuery, response=MetricsSchema)


@api.get("/metrics/sequences/<sequence_id>")
@require_api_key
def sequence_metrics(sequence_id: str) -> Any:
    """Metrics of the sends a sequence made (zeros for a sequence with none)."""
    sequence_id = _known_id("Sequence", sequence_id)
    window = _query.load(request.args)
    answer = metrics.email_metrics(db.session, tenant_id=g.tenant_id, window=window,
                                   sequence_id=sequence_id)
    return {"sequenceId": sequence_id, **answer}


document("/metrics/templates/{id}", "get", "E-mail metrics of one template's sends",
         tag="metrics", query=MetricsQuery, response=MetricsSchema)


@api.get("/metrics/templates/<template_id>")
@require_api_key
def template_metrics(template_id: str) -> Any:
    """Metrics of a template's sends; 404 for a template the tenant never had."""
    template_id = _known_id("Template", template_id)
    window = _query.load(request.args)
    metrics.require_known_template(db.session, tenant_id=g.tenant_id, template_id=template_id)
    answer = metrics.email_metrics(db.session, tenant_id=g.tenant_id, window=window,
                                   template_id=template_id)
    return {"templateId": template_id, **answer}
