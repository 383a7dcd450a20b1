"""GET /api/openapi.json: a valid OpenAPI 3 document generated from the validating schemas."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from app.schemas.events import EventListQuery
from app.schemas.events import TrackBatchSchema
from app.schemas.events import TrackEventSchema


@pytest.fixture
def document(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return dict(response.get_json())


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    name = ref.removeprefix("#/components/schemas/")
    return dict(document["components"]["schemas"][name])


def _body_schema(document: dict[str, Any], path: str) -> dict[str, Any]:
    operation = document["paths"][path]["post"]
    return _resolve(document, operation["requestBody"]["content"]["application/json"]["schema"])


def test_document_is_valid_openapi_3(document: dict[str, Any]) -> None:
    validate(document)  # raises on any violation of the OpenAPI 3 schema

    assert document["openapi"].startswith("3.")
    assert document["servers"] == [{"url": "/api"}]


def test_document_is_served_without_the_prefix_too(client: FlaskClient,
                                                   document: dict[str, Any]) -> None:
    assert client.get("/openapi.json").get_json() == document


def test_events_operations_are_listed(document: dict[str, Any]) -> None:
    paths = document["paths"]

    assert {"post", "get"} <= set(paths["/events"])
    assert "post" in paths["/events/batch"]
    assert "get" in paths["/events/{id}"]
    assert "202" in paths["/events"]["post"]["responses"]
    assert "202" in paths["/events/batch"]["post"]["responses"]
    for operation in (paths["/events"]["post"], paths["/events"]["get"],
                      paths["/events/batch"]["post"], paths["/events/{id}"]["get"]):
        assert operation["security"] == [{"apiKey": []}]
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"


def test_track_body_is_generated_from_the_validating_schema(document: dict[str, Any]) -> None:
    schema = _body_schema(document, "/events")

    assert set(schema["properties"]) == set(TrackEventSchema().fields)
    assert schema["additionalProperties"] is False
    assert schema["properties"]["event"]["maxLength"] == 200
    assert schema["properties"]["event"]["minLength"] == 1
    assert schema["properties"]["email"]["format"] == "email"
    assert schema["properties"]["timestamp"]["format"] == "date-time"
    properties = schema["properties"]["properties"]
    assert properties["type"] == "object"
    assert properties["maxProperties"] == 100
    value_types = {option["type"] for option in properties["additionalProperties"]["oneOf"]}
    assert value_types == {"string", "number", "boolean"}
    assert {"anyOf": [{"required": ["event"]}, {"required": ["name"]}]} in schema["allOf"]


def test_batch_body_items_are_track_bodies(document: dict[str, Any]) -> None:
    schema = _body_schema(document, "/events/batch")

    assert set(schema["properties"]) == set(TrackBatchSchema().fields)
    assert schema["required"] == ["events"]
    events = schema["properties"]["events"]
    assert events["maxItems"] == 500
    assert _resolve(document, events["items"]) == _body_schema(document, "/events")


def test_list_query_parameters_come_from_the_query_schema(document: dict[str, Any]) -> None:
    parameters = document["paths"]["/events"]["get"]["parameters"]
    query = {p["name"]: p for p in parameters if p["in"] == "query"}

    assert set(query) == set(EventListQuery().fields)
    assert query["limit"]["schema"]["maximum"] == 100
    assert query["limit"]["schema"]["minimum"] == 1
    assert query["archived"]["schema"]["type"] == "boolean"


def test_idempotency_key_header_is_documented_where_honoured(document: dict[str, Any]) -> None:
    def header_names(path: str, method: str) -> set[str]:
        parameters = document["paths"][path][method].get("parameters", [])
        return {p["name"] for p in parameters if p["in"] == "header"}

    assert "Idempotency-Key" in header_names("/events", "post")
    assert "Idempotency-Key" in header_names("/events/batch", "post")
    assert "Idempotency-Key" not in header_names("/events", "get")


def test_accepted_answer_schema_matches_the_answer(document: dict[str, Any],
                                                   client: FlaskClient, tenant: Any) -> None:
    operation = document["paths"]["/events"]["post"]
    schema = _resolve(document,
                      operation["responses"]["202"]["content"]["application/json"]["schema"])

    answer = tenant.post("/api/events", json={"email": "a@acme.test", "event": "x"}).get_json()

    assert set(schema["properties"]) == set(answer)


def test_error_envelope_is_documented(document: dict[str, Any]) -> None:
    error = document["components"]["schemas"]["Error"]

    assert error["required"] == ["error"]
    assert set(error["properties"]["error"]["properties"]) == {"code", "message", "details"}
