"""Idempotency-Key: a retry gets the first answer and stores nothing new."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Tenant
from tests.support import wait_for

pytestmark = pytest.mark.usefixtures("worker")

EVENT = {"email": "ann@acme.test", "event": "order.placed", "properties": {"total": 12.5}}


def _keyed(tenant: Tenant, key: str, body: Any, path: str = "/api/events") -> Any:
    return tenant.post(path, json=body, headers={"Idempotency-Key": key})


def _listed(tenant: Tenant) -> list[dict[str, Any]]:
    return list(tenant.get("/api/events?limit=100").get_json()["data"])


def _settled(tenant: Tenant, expected: set[str]) -> set[str]:
    """The ids of every event stored for `tenant` once `expected` and all sent before are in.

    A marker event sent now reaches the worker after everything sent before it, so once the
    marker and the expected events are listed, nothing sent earlier is still on its way (and
    nothing is left in flight to race the next test's table cleanup).
    """
    marker = tenant.post("/api/events", json={"email": "marker@acme.test", "event": "marker"})
    wanted = expected | {marker.get_json()["id"]}
    listed = wait_for(lambda: (lambda ids: wanted <= ids and ids)(
        {e["id"] for e in _listed(tenant)}), message="the expected events and the marker")
    return listed - {marker.get_json()["id"]}


def _id(response: Any) -> str:
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["id"])


def test_retry_with_the_same_key_replays_and_stores_once(tenant: Tenant) -> None:
    first = _keyed(tenant, "order-1001", EVENT)
    second = _keyed(tenant, "order-1001", EVENT)

    assert first.status_code == second.status_code == 202
    assert second.get_json() == first.get_json()
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert _settled(tenant, {_id(first)}) == {_id(first)}


def test_retry_on_the_unprefixed_path_is_the_same_request(tenant: Tenant) -> None:
    first = _keyed(tenant, "k-unprefixed", EVENT, "/api/events")
    second = _keyed(tenant, "k-unprefixed", EVENT, "/events")

    assert _id(second) == _id(first)
    assert _settled(tenant, {_id(first)}) == {_id(first)}


def test_retry_with_reserialised_body_is_the_same_request(tenant: Tenant) -> None:
    first = _keyed(tenant, "k-reordered", EVENT)
    raw = json.dumps(dict(reversed(list(EVENT.items()))), indent=2)

    second = tenant.post("/api/events", data=raw, content_type="application/json",
                         headers={"Idempotency-Key": "k-reordered"})

    assert _id(second) == _id(first)
    assert _settled(tenant, {_id(first)}) == {_id(first)}


def test_same_key_with_a_different_body_is_422(tenant: Tenant) -> None:
    first = _keyed(tenant, "order-1002", EVENT)

    response = _keyed(tenant, "order-1002", {**EVENT, "properties": {"total": 99}})

    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "UNPROCESSABLE_ENTITY"
    assert _settled(tenant, {_id(first)}) == {_id(first)}


def test_same_key_on_another_endpoint_is_422(tenant: Tenant) -> None:
    first = _keyed(tenant, "shared", EVENT)

    response = _keyed(tenant, "shared", {"events": [EVENT]}, "/api/events/batch")

    assert response.status_code == 422
    assert _settled(tenant, {_id(first)}) == {_id(first)}


def test_keys_are_per_tenant(tenant: Tenant, other_tenant: Tenant) -> None:
    mine = _keyed(tenant, "same-key", EVENT)
    theirs = _keyed(other_tenant, "same-key", EVENT)

    assert _id(mine) != _id(theirs)
    assert "Idempotent-Replayed" not in theirs.headers
    assert _keyed(other_tenant, "same-key", EVENT).get_json() == theirs.get_json()
    assert _settled(tenant, {_id(mine)}) == {_id(mine)}
    assert _settled(other_tenant, {_id(theirs)}) == {_id(theirs)}


def test_refused_request_is_not_kept_so_a_corrected_retry_works(tenant: Tenant) -> None:
    bad = _keyed(tenant, "order-1003", {**EVENT, "event": "email.sent"})
    assert bad.status_code == 400

    fixed = _keyed(tenant, "order-1003", EVENT)
    again = _keyed(tenant, "order-1003", EVENT)

    assert _id(again) == _id(fixed)
    assert _settled(tenant, {_id(fixed)}) == {_id(fixed)}


def test_refused_malformed_body_is_not_kept(tenant: Tenant) -> None:
    bad = tenant.post("/api/events", data=b"{oops", content_type="application/json",
                      headers={"Idempotency-Key": "order-1004"})
    assert bad.status_code == 400

    fixed = _keyed(tenant, "order-1004", EVENT)

    assert _settled(tenant, {_id(fixed)}) == {_id(fixed)}


def test_not_found_is_not_kept(tenant: Tenant) -> None:
    bad = _keyed(tenant, "order-1005", {"contactId": "cnt_missing", "event": "x"})
    assert bad.status_code == 404

    fixed = _keyed(tenant, "order-1005", EVENT)

    assert _settled(tenant, {_id(fixed)}) == {_id(fixed)}


def test_key_of_255_characters_is_fine_and_256_is_refused(tenant: Tenant) -> None:
    fine = _keyed(tenant, "k" * 255, EVENT)
    assert _keyed(tenant, "k" * 255, EVENT).get_json() == fine.get_json()

    response = _keyed(tenant, "k" * 256, EVENT)

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert "Idempotency-Key" in error["details"]
    assert _settled(tenant, {_id(fine)}) == {_id(fine)}


def test_empty_key_is_refused(tenant: Tenant) -> None:
    response = _keyed(tenant, "", EVENT)

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "VALIDATION_ERROR"


def test_unauthorised_request_with_a_key_is_401(client: Any) -> None:
    response = client.post("/api/events", json=EVENT,
                           headers={"Idempotency-Key": "k", "Authorization": "Bearer kr_x"})

    assert response.status_code == 401


def test_batch_retry_replays_every_result_and_stores_once(tenant: Tenant) -> None:
    batch = {"events": [EVENT, {"email": "bob@acme.test", "event": "b"}, {"event": "bad"}]}

    first = _keyed(tenant, "batch-1", batch, "/api/events/batch")
    second = _keyed(tenant, "batch-1", batch, "/events/batch")

    assert first.status_code == second.status_code == 202
    assert second.get_json() == first.get_json()
    accepted = {r["id"] for r in first.get_json()["results"] if "id" in r}
    assert len(accepted) == 2
    assert _settled(tenant, accepted) == accepted


def test_batch_same_key_different_body_is_422(tenant: Tenant) -> None:
    first = _keyed(tenant, "batch-2", {"events": [EVENT]}, "/api/events/batch")

    response = _keyed(tenant, "batch-2", {"events": [EVENT, EVENT]}, "/api/events/batch")

    assert response.status_code == 422
    accepted = {first.get_json()["results"][0]["id"]}
    assert _settled(tenant, accepted) == accepted


def test_refused_batch_is_not_kept(tenant: Tenant) -> None:
    too_many = {"events": [EVENT] * 501}
    assert _keyed(tenant, "batch-3", too_many, "/api/events/batch").status_code == 400

    response = _keyed(tenant, "batch-3", {"events": [EVENT]}, "/api/events/batch")

    assert response.status_code == 202
    accepted = {response.get_json()["results"][0]["id"]}
    assert _settled(tenant, accepted) == accepted


def test_requests_without_a_key_are_never_replayed(tenant: Tenant) -> None:
    first = tenant.post("/api/events", json=EVENT)
    second = tenant.post("/api/events", json=EVENT)

    assert _id(first) != _id(second)
    assert _settled(tenant, {_id(first), _id(second)}) == {_id(first), _id(second)}
