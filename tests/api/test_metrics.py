"""E-mail metrics: GET /api/metrics, /api/metrics/sequences/:id, /api/metrics/templates/:id.

The sends are inserted directly with known lifecycle timestamps (some on bucket edges), so every
expected number below can be worked out by hand from the table in `sends`.
"""

from __future__ import annotations

from datetime import datetime
from datetime import timedelta
from typing import Any

import pytest

from app import db
from app.ids import new_id
from app.models import Send
from app.models import Template
from app.timeutil import parse_iso
from app.timeutil import utcnow
from tests.conftest import Tenant

METRICS = ("sent", "delivered", "opened", "clicked", "bounced", "complained", "unsubscribed")
RATES = ("deliveryRate", "openRate", "clickRate", "clickToOpenRate", "bounceRate",
         "complaintRate")
DAY = {"period": "day", "from": "2025-06-01", "to": "2025-06-05"}


def _at(text: str | None) -> datetime | None:
    return None if text is None else parse_iso(text)


def add_send(tenant_id: str, *, template: str = "welcome", sequence: str | None = None,
             status: str = "sent", **timestamps: str | None) -> str:
    """Insert one send; `timestamps` are e.g. sent="2025-06-02T09:15:00Z"."""
    now = utcnow()
    send_id = new_id("snd")
    with db.transaction() as session:
        session.add(Send(
            id=send_id, tenant_id=tenant_id, contact_id=new_id("cnt"), email="a@acme.test",
            template_id=template, status=status, source="sequence" if sequence else
            "transactional", source_id=sequence, created_at=now, updated_at=now,
            **{f"{name}_at": _at(value) for name, value in timestamps.items()}))
    return send_id


def add_template(tenant_id: str, template_id: str) -> None:
    now = utcnow()
    with db.transaction() as session:
        session.add(Template(tenant_id=tenant_id, id=template_id, name=template_id,
                             subject="Hi", html="<p>Hi</p>", created_at=now, updated_at=now))


@pytest.fixture
def sends(tenant: Tenant, other_tenant: Tenant) -> Tenant:
    """Five sends of `tenant` around 1-5 June 2025, one of another tenant, one never sent."""
    add_template(tenant.id, "welcome")
    add_template(tenant.id, "receipt")
    t = tenant.id
    # s1: opened and clicked the next day.
    add_send(t, sent="2025-06-02T09:15:00Z", delivered="2025-06-02T09:16:00Z",
             opened="2025-06-03T10:00:00Z", clicked="2025-06-03T10:01:00Z")
    # s2 (sequence): sent in the day's last millisecond, delivered in the next day's first.
    add_send(t, sequence="onboarding", sent="2025-06-02T23:59:59.999Z",
             delivered="2025-06-03T00:00:00.000Z", opened="2025-06-03T08:00:00Z")
    # s3: sent at the window's first instant, bounced a second later.
    add_send(t, template="receipt", status="bounced", sent="2025-06-01T00:00:00.000Z",
             bounced="2025-06-01T00:00:01Z")
    # s4: delivered, then a complaint and an unsubscribe the next day.
    add_send(t, template="receipt", status="complained", sent="2025-06-04T12:00:00Z",
             delivered="2025-06-04T12:01:00Z", complained="2025-06-05T00:00:00Z",
             unsubscribed="2025-06-05T01:00:00Z")
    # s5 (sequence): sent just before the window, delivered at its first instant.
    add_send(t, sequence="onboarding", sent="2025-05-31T23:59:59.999Z",
             delivered="2025-06-01T00:00:00.000Z")
    add_send(t, status="queued")
    add_send(other_tenant.id, sent="2025-06-02T10:00:00Z", delivered="2025-06-02T10:00:01Z")
    return tenant


def _ok(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def _counts(item: dict[str, Any]) -> tuple[int, ...]:
    return tuple(item[name] for name in METRICS)


def _series(body: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {item["timestamp"]: _counts(item) for item in body["timeseries"]}


def _error(response: Any) -> dict[str, Any]:
    assert response.status_code == 400, response.get_json()
    error: dict[str, Any] = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    return error


def test_daily_buckets_count_each_lifecycle_step_by_its_own_time(sends: Tenant) -> None:
    body = _ok(sends.get("/api/metrics", query_string=DAY))

    assert body["period"] == "day"
    assert body["from"] == "2025-06-01T00:00:00.000Z"
    assert body["to"] == "2025-06-06T00:00:00.000Z"  # the end of the bucket holding `to`
    #                                        sent del open click bounce compl unsub
    assert _series(body) == {"2025-06-01T00:00:00.000Z": (1, 1, 0, 0, 1, 0, 0),
                             "2025-06-02T00:00:00.000Z": (2, 1, 0, 0, 0, 0, 0),
                             "2025-06-03T00:00:00.000Z": (0, 1, 2, 1, 0, 0, 0),
                             "2025-06-04T00:00:00.000Z": (1, 1, 0, 0, 0, 0, 0),
                             "2025-06-05T00:00:00.000Z": (0, 0, 0, 0, 0, 1, 1)}
    assert [item["timestamp"] for item in body["timeseries"]] == sorted(_series(body))
    assert _counts(body["totals"]) == (4, 4, 2, 1, 1, 1, 1)


def test_rates_follow_the_analytics_guide(sends: Tenant) -> None:
    body = _ok(sends.get("/api/metrics", query_string=DAY))

    assert {name: body["totals"][name] for name in RATES} == {
        "deliveryRate": 1.0, "openRate": 0.5, "clickRate": 0.25, "clickToOpenRate": 0.5,
        "bounceRate": 0.25, "complaintRate": 0.25}
    last_day = body["timeseries"][-1]  # a complaint but nothing sent or delivered that day
    assert {name: last_day[name] for name in RATES} == dict.fromkeys(RATES, 0.0)


def test_a_repeated_open_counts_once_by_the_first_open(tenant: Tenant) -> None:
    # The lifecycle keeps the first open in `opened_at` however often the pixel is fetched.
    add_send(tenant.id, sent="2025-06-02T09:00:00Z", opened="2025-06-02T10:00:00Z")

    body = _ok(tenant.get("/api/metrics", query_string=DAY))

    assert body["totals"]["opened"] == 1


def test_empty_buckets_are_present_with_zeros(sends: Tenant) -> None:
    body = _ok(sends.get("/api/metrics", query_string={"from": "2025-06-01",
                                                        "to": "2025-06-10"}))

    assert len(body["timeseries"]) == 10
    assert body["timeseries"][-1]["timestamp"] == "2025-06-10T00:00:00.000Z"
    for item in body["timeseries"][5:]:
        assert _counts(item) == (0,) * 7
        assert all(item[name] == 0.0 for name in RATES)


def test_hourly_buckets_split_at_the_hour(sends: Tenant) -> None:
    body = _ok(sends.get("/api/metrics", query_string={
        "period": "hour", "from": "2025-06-02T23:30:00Z", "to": "2025-06-03T00:30:00Z"}))

    assert body["from"] == "2025-06-02T23:00:00.000Z"
    assert body["to"] == "2025-06-03T01:00:00.000Z"
    assert _series(body) == {"2025-06-02T23:00:00.000Z": (1, 0, 0, 0, 0, 0, 0),
                             "2025-06-03T00:00:00.000Z": (0, 1, 0, 0, 0, 0, 0)}


def test_weeks_start_on_monday(sends: Tenant) -> None:
    # 1 June 2025 is a Sunday: it belongs to the week of Monday 26 May, with s5's send.
    body = _ok(sends.get("/api/metrics", query_string={"period": "week", **{
        key: DAY[key] for key in ("from", "to")}}))

    assert _series(body) == {"2025-05-26T00:00:00.000Z": (2, 1, 0, 0, 1, 0, 0),
                             "2025-06-02T00:00:00.000Z": (3, 3, 2, 1, 0, 1, 1)}
    assert body["to"] == "2025-06-09T00:00:00.000Z"


@pytest.mark.parametrize("period", ["month", "monthly"])
def test_monthly_buckets_and_the_guide_alias(sends: Tenant, period: str) -> None:
    body = _ok(sends.get("/api/metrics", query_string={"period": period, "from": "2025-05-15",
                                                        "to": "2025-06-20"}))

    assert body["period"] == "month"
    assert _series(body) == {"2025-05-01T00:00:00.000Z": (1, 0, 0, 0, 0, 0, 0),
                             "2025-06-01T00:00:00.000Z": (4, 4, 2, 1, 1, 1, 1)}


def test_daily_is_the_guide_alias_of_day_and_the_root_path_works(sends: Tenant) -> None:
    guide = _ok(sends.get("/metrics", query_string={**DAY, "period": "daily"}))

    assert guide == _ok(sends.get("/api/metrics", query_string=DAY))


def test_a_year_end_month_rolls_into_january(tenant: Tenant) -> None:
    add_send(tenant.id, sent="2024-12-31T23:59:59.999Z", delivered="2025-01-01T00:00:00Z")

    body = _ok(tenant.get("/api/metrics", query_string={"period": "month", "from": "2024-12-01",
                                                         "to": "2025-01-31"}))

    assert _series(body) == {"2024-12-01T00:00:00.000Z": (1, 0, 0, 0, 0, 0, 0),
                             "2025-01-01T00:00:00.000Z": (0, 1, 0, 0, 0, 0, 0)}


def test_defaults_are_the_last_30_days_by_day(tenant: Tenant) -> None:
    now = utcnow()
    add_send(tenant.id, sent=now.isoformat())
    add_send(tenant.id, sent=(now - timedelta(days=40)).isoformat())

    body = _ok(tenant.get("/api/metrics"))

    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    assert body["period"] == "day"
    assert len(body["timeseries"]) == 31
    assert parse_iso(body["timeseries"][-1]["timestamp"]) == today
    assert parse_iso(body["to"]) == today + timedelta(days=1)
    assert body["totals"]["sent"] == 1


def test_hourly_default_is_the_last_48_hours(tenant: Tenant) -> None:
    body = _ok(tenant.get("/api/metrics", query_string={"period": "hour"}))

    assert len(body["timeseries"]) == 49  # 48 hours back from now, in whole hours


def test_template_metrics_count_only_its_sends(sends: Tenant) -> None:
    body = _ok(sends.get("/api/metrics/templates/welcome", query_string=DAY))

    assert body["templateId"] == "welcome"
    assert _counts(body["totals"]) == (2, 3, 2, 1, 0, 0, 0)
    receipt = _ok(sends.get("/metrics/templates/receipt", query_string=DAY))
    assert _counts(receipt["totals"]) == (2, 1, 0, 0, 1, 1, 1)


def test_sequence_metrics_count_only_its_sends(sends: Tenant) -> None:
    body = _ok(sends.get("/api/metrics/sequences/onboarding", query_string=DAY))

    assert body["sequenceId"] == "onboarding"
    assert _counts(body["totals"]) == (1, 2, 1, 0, 0, 0, 0)
    assert len(body["timeseries"]) == 5


def test_a_sequence_without_sends_has_zeros(sends: Tenant) -> None:
    body = _ok(sends.get("/api/metrics/sequences/never-ran", query_string=DAY))

    assert _counts(body["totals"]) == (0,) * 7
    assert len(body["timeseries"]) == 5


def test_an_unknown_template_is_404_and_a_known_one_without_sends_has_zeros(
        sends: Tenant) -> None:
    missing = sends.get("/api/metrics/templates/no-such-template", query_string=DAY)
    assert missing.status_code == 404
    assert missing.get_json()["error"]["code"] == "NOT_FOUND"

    add_template(sends.id, "unused")
    assert _counts(_ok(sends.get("/api/metrics/templates/unused"))["totals"]) == (0,) * 7


def test_a_deleted_template_with_sends_still_has_metrics(tenant: Tenant) -> None:
    add_send(tenant.id, template="retired", sent="2025-06-02T09:00:00Z")

    body = _ok(tenant.get("/api/metrics/templates/retired", query_string=DAY))

    assert body["totals"]["sent"] == 1


def test_tenants_see_only_their_own_sends(sends: Tenant, other_tenant: Tenant) -> None:
    body = _ok(other_tenant.get("/api/metrics", query_string=DAY))

    assert _counts(body["totals"]) == (1, 1, 0, 0, 0, 0, 0)
    # Its `welcome` sends count (it has no such template row, but it has sends of one), while
    # `tenant`'s templates and sequences are not its own.
    assert _counts(_ok(other_tenant.get("/api/metrics/templates/welcome",
                                        query_string=DAY))["totals"]) == (1, 1, 0, 0, 0, 0, 0)
    assert other_tenant.get("/api/metrics/templates/receipt").status_code == 404
    assert _counts(_ok(other_tenant.get("/api/metrics/sequences/onboarding",
                                        query_string=DAY))["totals"]) == (0,) * 7


def test_a_bad_period_is_a_validation_error(tenant: Tenant) -> None:
    error = _error(tenant.get("/api/metrics", query_string={"period": "year"}))

    assert "period" in error["details"]


def test_from_after_to_is_a_validation_error(tenant: Tenant) -> None:
    error = _error(tenant.get("/api/metrics", query_string={"from": "2025-06-05",
                                                            "to": "2025-06-01"}))

    assert "from" in error["details"]


def test_too_many_buckets_is_a_validation_error(tenant: Tenant) -> None:
    error = _error(tenant.get("/api/metrics", query_string={
        "period": "hour", "from": "2025-01-01", "to": "2025-06-01"}))

    assert "1000" in error["message"]
    # The same range by day is fine.
    _ok(tenant.get("/api/metrics", query_string={"from": "2025-01-01", "to": "2025-06-01"}))


@pytest.mark.parametrize("query", [{"from": "yesterday"}, {"to": "2025-13-01"},
                                   {"unknown": "1"}])
def test_malformed_parameters_are_validation_errors(tenant: Tenant,
                                                    query: dict[str, str]) -> None:
    error = _error(tenant.get("/api/metrics/sequences/x", query_string=query))

    assert set(query) <= set(error["details"])


def test_metrics_need_an_api_key(client: Any, sends: Tenant) -> None:
    assert client.get("/api/metrics").status_code == 401
    assert client.get("/api/metrics/templates/welcome").status_code == 401
    # At the root, a wrong key is a 401 too (not the Prometheus page).
    wrong = client.get("/metrics", headers={"Authorization": "Bearer kr_wrong"})
    assert wrong.status_code == 401
    assert wrong.get_json()["error"]["code"] == "UNAUTHORISED"
    assert client.get("/metrics", query_string={"period": "day"}).status_code == 401


def test_metrics_operations_are_documented(client: Any) -> None:
    paths = client.get("/api/openapi.json").get_json()["paths"]

    for path in ("/metrics", "/metrics/sequences/{id}", "/metrics/templates/{id}"):
        operation = paths[path]["get"]
        assert operation["security"] == [{"apiKey": []}]
        names = {parameter["name"] for parameter in operation["parameters"]}
        assert {"period", "from", "to"} <= names
