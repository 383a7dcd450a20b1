"""Metrics query and answer schemas (the query one validates; both document the API)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import post_load
from marshmallow import pre_load
from marshmallow import validate

from app.schemas.fields import Timestamp
from app.services.metrics import DEFAULT_SPAN
from app.services.metrics import MAX_BUCKETS
from app.services.metrics import PERIOD_ALIASES
from app.services.metrics import PERIODS
from app.services.metrics import Window
from app.services.metrics import count_buckets
from app.services.metrics import make_window
from app.timeutil import utcnow

_RATE_HELP = "A fraction from 0 (rounded to 4 places); 0 when its denominator is 0."


class MetricsQuery(Schema):
    """`period`, `from`, `to` of every metrics endpoint; loads into a `Window`."""

    period = fields.String(
        load_default="day", validate=validate.OneOf(PERIODS + tuple(PERIOD_ALIASES)),
        metadata={"description": "Bucket size: hour, day (default), week (from Monday) or month, "
                                 "in UTC; the guide's daily and monthly are accepted too."})
    from_ = Timestamp(data_key="from", metadata={
        "description": "ISO 8601 date or date-time; counting starts at the start of its bucket. "
                       "Defaults to 30 days before `to` (48 hours for `hour`)."})
    to = Timestamp(metadata={"description": "ISO 8601 date or date-time; counting ends at the "
                                            "end of its bucket. Defaults to now."})

    @pre_load
    def _drop_empty(self, data: Any, **_: Any) -> Any:
        # URL builders often send unused parameters as `?from=&to=`: treat them as not given.
        if hasattr(data, "items"):
            return {key: value for key, value in data.items() if value != ""}
        return data

    @post_load
    def _window(self, data: dict[str, Any], **_: Any) -> Window:
        period = PERIOD_ALIASES.get(data["period"], data["period"])
        end = data.get("to") or utcnow()
        start = data.get("from_")
        if start is None:
            start = end - DEFAULT_SPAN[period]
        if start > end:
            raise ValidationError({"from": ["Must not be after `to`."]})
        try:
            window = make_window(period=period, start=start, end=end)
        except (OverflowError, ValueError):  # a bucket would end after year 9999
            raise ValidationError({"to": ["Out of range."]}) from None
        if count_buckets(window.start, window.end, period) > MAX_BUCKETS:
            raise ValidationError({"_schema": [
                f"At most {MAX_BUCKETS} {period} buckets per request: narrow `from`-`to` or use "
                f"a longer period."]})
        return window


class MetricCountsSchema(Schema):
    """Sends per lifecycle step (each send once per step) and the Analytics guide's rates."""

    sent = fields.Integer()
    delivered = fields.Integer()
    opened = fields.Integer(metadata={"description": "Unique opens, by first open."})
    clicked = fields.Integer(metadata={"description": "Unique clicks, by first click."})
    bounced = fields.Integer(metadata={"description": "Hard and soft."})
    complained = fields.Integer()
    unsubscribed = fields.Integer()
    deliveryRate = fields.Float(metadata={"description": f"delivered / sent. {_RATE_HELP}"})
    openRate = fields.Float(metadata={"description": f"opened / delivered. {_RATE_HELP}"})
    clickRate = fields.Float(metadata={"description": f"clicked / delivered. {_RATE_HELP}"})
    clickToOpenRate = fields.Float(metadata={"description": f"clicked / opened. {_RATE_HELP}"})
    bounceRate = fields.Float(metadata={"description": f"bounced / sent. {_RATE_HELP}"})
    complaintRate = fields.Float(metadata={"description": f"complained / delivered. "
                                                          f"{_RATE_HELP}"})


class MetricBucketSchema(MetricCountsSchema):
    """One bucket of the time series (empty buckets are present, with zeros)."""

    timestamp = Timestamp(metadata={"description": "The bucket's start (UTC)."})


class MetricsSchema(Schema):
    """`{period, from, to, totals, timeseries}`; `from`-`to` is the whole buckets counted."""

    period = fields.String(validate=validate.OneOf(PERIODS))
    from_ = Timestamp(data_key="from", metadata={"description": "Start of the first bucket."})
    to = Timestamp(metadata={"description": "End of the last bucket (exclusive)."})
    templateId = fields.String(metadata={"description": "Template metrics only."})
    sequenceId = fields.String(metadata={"description": "Sequence metrics only."})
    totals = fields.Nested(MetricCountsSchema)
    timeseries = fields.List(fields.Nested(MetricBucketSchema))
