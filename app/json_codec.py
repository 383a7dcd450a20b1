"""Compact JSON out of the hot paths: orjson, and the standard library where orjson refuses.

orjson writes JSON several times faster than `json`, but refuses integers beyond 64 bits and
strings with lone surrogates, which `json` accepts; for those this falls back to `json`, which
writes an equivalent document. Reading stays with `json` wherever such values can come back:
orjson reads an integer beyond 64 bits as a float, silently.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
from flask import Response
from flask.json.provider import DefaultJSONProvider
from werkzeug.sansio.response import Response as SansIOResponse

Default = Callable[[Any], Any]


def dumps(value: Any, *, default: Default | None = None, option: int = 0) -> bytes:
    """`value` as compact JSON bytes; `default` converts what JSON has no type for.

    `option` takes orjson's flags (e.g. `orjson.OPT_PASSTHROUGH_DATETIME`, so that `default`
    formats datetimes as the fallback would).
    """
    try:
        return orjson.dumps(value, default=default, option=option)
    except orjson.JSONEncodeError:
        # Values orjson refuses (see above); ASCII escapes keep lone surrogates writable.
        return json.dumps(value, default=default, separators=(",", ":")).encode()


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON answers written with `dumps` (a batch's answer is 500 results, twice).

    Datetimes and dataclasses still go to Flask's `default`, so answers say what Flask would;
    non-ASCII text is written as UTF-8 rather than escaped. Debug mode's indented answers and
    reading requests stay Flask's own.
    """

    sort_keys = False  # answers keep their fields in the order the views give them
    _DEFAULTS_DECIDE = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return self._compact(obj, **kwargs).decode()

    def response(self, *args: Any, **kwargs: Any) -> SansIOResponse:
        if (self.compact is None and self._app.debug) or self.compact is False:
            return super().response(*args, **kwargs)
        body = self._compact(self._prepare_response_obj(args, kwargs)) + b"\n"
        return Response(body, mimetype=self.mimetype)

    def _compact(self, obj: Any, **kwargs: Any) -> bytes:
        if kwargs and kwargs != {"separators": (",", ":")}:  # indent, ...: as asked, by `json`
            return super().dumps(obj, **kwargs).encode()
        option = self._DEFAULTS_DECIDE | (orjson.OPT_SORT_KEYS if self.sort_keys else 0)
        return dumps(obj, default=self.default, option=option)
