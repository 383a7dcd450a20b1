"""The one error envelope: `{"error": {"code", "message", "details"?}}`, produced only here."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from flask import Response
from flask import jsonify
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class APIError(Exception):
    """An error the client should see; views raise it and never format errors themselves."""

    status = 500
    code = "INTERNAL_ERROR"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class BadRequest(APIError):
    status, code = 400, "VALIDATION_ERROR"


class Unauthorised(APIError):
    status, code = 401, "UNAUTHORISED"


class Forbidden(APIError):
    status, code = 403, "FORBIDDEN"


class NotFound(APIError):
    status, code = 404, "NOT_FOUND"


class Conflict(APIError):
    status, code = 409, "CONFLICT"


class PayloadTooLarge(APIError):
    status, code = 413, "PAYLOAD_TOO_LARGE"


class Unprocessable(APIError):
    status, code = 422, "UNPROCESSABLE_ENTITY"


class ServiceUnavailable(APIError):
    status, code = 503, "SERVICE_UNAVAILABLE"


_HTTP_CODES = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORISED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "VALIDATION_ERROR",
    422: "UNPROCESSABLE_ENTITY",
    429: "RATE_LIMITED",
}


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    """Build the envelope response."""
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    response = jsonify({"error": body})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _validation_details(messages: Any) -> dict[str, Any]:
    return messages if isinstance(messages, dict) else {"_schema": messages}


def validation_message(details: dict[str, Any]) -> str:
    """A one-line summary naming the first offending field."""
    if not details:
        return "The request is not valid."
    field, problem = next(iter(details.items()))
    while isinstance(problem, dict) and problem:
        field, problem = f"{field}.{next(iter(problem))}", next(iter(problem.values()))
    text = problem[0] if isinstance(problem, list) and problem else str(problem)
    return text if field == "_schema" else f"{field}: {text}"


def register_error_handlers(app: Flask) -> None:
    """Route every failure through the envelope; never leak a stack trace."""

    @app.errorhandler(APIError)
    def _api_error(error: APIError) -> Response:
        return error_response(error.status, error.code, error.message, error.details,
                              error.headers)

    @app.errorhandler(ValidationError)
    def _validation_error(error: ValidationError) -> Response:
        details = _validation_details(error.messages)
        return error_response(400, "VALIDATION_ERROR", validation_message(details), details)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code = _HTTP_CODES.get(status, "INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST")
        message = error.description or error.name
        if status == 413:
            message = "Request body is too large."
        # Keep the headers HTTP requires with some answers (`Allow` on 405, for one).
        headers = {name: value for name, value in error.get_headers()
                   if name.lower() != "content-type"}
        return error_response(status, code, message, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unhandled_error")
        return error_response(500, "INTERNAL_ERROR", "Something went wrong on our side.")
