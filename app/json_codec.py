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
