"""Unauthenticated meta endpoints: the OpenAPI document and liveness."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask import jsonify

from app.api.blueprint import api
from app.api.openapi import build_spec


@api.get("/openapi.json")
def openapi_document() -> Response:
    return jsonify(build_spec())


@api.get("/healthz")
def healthz() -> Any:
    return {"status": "ok"}
