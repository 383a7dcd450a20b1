"""Tracking URLs for an outgoing e-mail: the open pixel, click links, the unsubscribe link.

Links are rewritten on the final rendered HTML with a real HTML parser (regexes rewrite the
wrong attributes). Only http(s) links in `<a href>` are tracked; `mailto:`, fragments and our own
unsubscribe link stay as they are, as does any link marked `data-kraiter-track="off"`. The
original URLs are returned so the send can store them: a click token carries only an index, so
the redirect target always comes from the database, never from the URL (no open redirect).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from html.parser import HTMLParser

from app.services import tokens

_HREF = re.compile(r"""(?<![\w-])(href\s*=\s*)(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.IGNORECASE)


def open_url(public_url: str, secret_keys: Sequence[str], send_id: str) -> str:
    """The open pixel's URL."""
    return f"{public_url}/t/o/{tokens.make_token(secret_keys, tokens.OPEN, [send_id])}"


def click_url(public_url: str, secret_keys: Sequence[str], send_id: str, index: int) -> str:
    """The tracking URL of the send's `index`-th link."""
    token = tokens.make_token(secret_keys, tokens.CLICK, [send_id, index])
    return f"{public_url}/t/c/{token}"


def unsubscribe_url(public_url: str, secret_keys: Sequence[str], send_id: str) -> str:
    """The one-click unsubscribe URL (RFC 8058) for the send's contact."""
    token = tokens.make_token(secret_keys, tokens.UNSUBSCRIBE, [send_id])
    return f"{public_url}/unsubscribe/{token}"


class _AnchorFinder(HTMLParser):
    """Collects the source span of every `<a>` start tag."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[int, int, str]] = []  # (line, column, raw tag text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            raw = self.get_starttag_text() or ""
            line, column = self.getpos()
            self.anchors.append((line, column, raw))


def _trackable(url: str, skip_prefix: str) -> bool:
    lowered = url.strip().lower()
    return lowered.startswith(("http://", "https://")) and not url.startswith(skip_prefix)


def instrument_html(body: str, *, public_url: str, secret_keys: Sequence[str],
                    send_id: str) -> tuple[str, list[str]]:
    """Rewrite tracked links and append the open pixel; return the HTML and the original URLs."""
    finder = _AnchorFinder()
    finder.feed(body)
    finder.close()
    line_starts = [0]
    for text_line in body.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(text_line))
    links: list[str] = []
    pieces: list[str] = []
    cursor = 0
    skip_prefix = f"{public_url}/unsubscribe/"
    for line, column, raw in finder.anchors:
        start = line_starts[line - 1] + column
        if "data-kraiter-track" in raw.lower() and re.search(
                r"data-kraiter-track\s*=\s*[\"']?off", raw, re.IGNORECASE):
            continue
        match = _HREF.search(raw)
        if match is None:
            continue
        url = html.unescape(next(g for g in match.groups()[1:] if g is not None))
        if not _trackable(url, skip_prefix):
            continue
        tracked = click_url(public_url, secret_keys, send_id, len(links))
        links.append(url.strip())
        new_tag = raw[:match.start()] + f'{match.group(1)}"{html.escape(tracked)}"' + \
            raw[match.end():]
        pieces.append(body[cursor:start])
        pieces.append(new_tag)
        cursor = start + len(raw)
    pieces.append(body[cursor:])
    rewritten = "".join(pieces)
    pixel = (f'<img src="{html.escape(open_url(public_url, secret_keys, send_id))}" width="1" '
             'height="1" alt="" style="display:none;border:0;width:1px;height:1px">')
    closing = rewritten.lower().rfind("</body>")
    if closing == -1:
        return rewritten + pixel, links
    return rewritten[:closing] + pixel + rewritten[closing:], links
