"""Compact JSON: orjson where it can, the standard library's document where it cannot."""

from __future__ import annotations

import json
from datetime import UTC
from datetime import datetime
from typing import Any

import pytest
from flask import Flask

from app import json_codec


@pytest.mark.parametrize("value", [
    {"a": 1, "b": [1.5, 0.1 + 0.2, 1e-7, True, None], "c": "Ünïcode ✓"},
    {"big": 2**70, "negative": -(2**70), "u64": 2**64 - 1},  # orjson refuses these
    {"lone": "x\ud800y"},  # and this
])
def test_dumps_writes_what_json_reads_back_unchanged(value: dict[str, Any]) -> None:
    written = json_codec.dumps(value)

    assert json.loads(written) == value
    assert b" " not in written.replace("Ünïcode ✓".encode(), b"")  # compact


def test_dumps_asks_default_for_unknown_types_on_both_paths() -> None:
    def default(value: Any) -> Any:
        if isinstance(value, set):
            return sorted(value)
        raise TypeError(type(value).__name__)

    assert json.loads(json_codec.dumps({"s": {2, 1}}, default=default)) == {"s": [1, 2]}
    assert json.loads(json_codec.dumps({"s": {2, 1}, "big": 2**70}, default=default)) == {
        "s": [1, 2], "big": 2**70}
    with pytest.raises(TypeError):
        json_codec.dumps({"o": object()}, default=default)


@pytest.fixture
def plain_app() -> Flask:
    app = Flask(__name__)
    app.json = json_codec.JSONProvider(app)
    return app


def test_answers_say_what_flask_would(plain_app: Flask) -> None:
    app = plain_app
    moment = datetime(2026, 11, 27, 10, 30, tzinfo=UTC)
    value = {"z": 1, "a": moment, "big": 2**70, "text": "Ünïcode ✓"}
    with app.app_context():
        answer = app.json.response(value)

    assert answer.mimetype == "application/json"
    assert json.loads(answer.get_data()) == {"z": 1, "a": "Fri, 27 Nov 2026 10:30:00 GMT",
                                             "big": 2**70, "text": "Ünïcode ✓"}
    assert answer.get_data().startswith(b'{"z":1,"a":')  # the view's order, compact
    assert answer.get_data().endswith(b"}\n")


def test_debug_answers_stay_indented(plain_app: Flask) -> None:
    app = plain_app
    app.debug = True
    with app.app_context():
        answer = app.json.response({"a": 1})

    assert answer.get_data() == b'{\n  "a": 1\n}\n'
