"""Tracking for an outgoing e-mail: the open pixel, click links, the unsubscribe link.

Links are rewritten on the final rendered HTML with a real HTML parser (regexes rewrite the
wrong attributes). Only http(s) links in `<a href>` are tracked; `mailto:`, `tel:`, fragments,
our own unsubscribe and tracking links stay as they are, as does any link marked
`data-kraiter-track="off"`. The original URLs are returned so the send can store them: a click
token carries only an index, so the redirect target always comes from the database, never from
the URL (no open redirect).

The second half records what the public endpoints see. Those functions take the session, lock
the send row and never commit; the view commits.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Contact
from app.models import Send
from app.services import lifecycle
from app.services import tokens

# The standard library parser's own tokenisation of a start tag (html.parser's `tagfind_tolerant`
# and `attrfind_tolerant`), so we locate an attribute exactly where the parser found it: a search
# for "href=" would also hit attribute *values* such as title="see href=…".
_TAG_NAME = re.compile(r"([a-zA-Z][^\t\n\r\f />\x00]*)(?:\s|/(?!>))*")
_ATTRIBUTE = re.compile(
    r"""((?<=['"\s/])[^\s/>][^\s/=>]*)(\s*=+\s*('[^']*'|"[^"]*"|(?!['"])[^>\s]*))?(?:\s|/(?!>))*""")
# A browser drops these from anywhere in a URL (WHATWG URL parser); storing them would put a
# raw newline into our Location header.
_URL_NOISE = re.compile(r"[\t\n\r]")
_C0_AND_SPACE = "".join(chr(code) for code in range(0x21))  # trimmed from both ends of a URL
_UNSAFE_TARGET = re.compile(r"[\x00-\x1f\x7f]")


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


class _Tag:
    """An `<a>` start tag: where it starts in the source, its raw text, its parsed attributes."""

    def __init__(self, start: int, raw: str, attrs: list[tuple[str, str | None]]) -> None:
        self.start, self.raw, self.attrs = start, raw, attrs

    def attribute(self, name: str) -> str | None:
        """The first value of attribute `name` (browsers ignore repeats), None if absent."""
        return next((value for key, value in self.attrs if key == name), None)


class _Scanner(HTMLParser):
    """Finds every `<a>` start tag and the last `</body>` with their offsets in the source."""

    def __init__(self, body: str) -> None:
        super().__init__(convert_charrefs=True)
        # The parser counts lines by "\n" only, so offsets are rebuilt the same way (not with
        # splitlines(), which also breaks on "\r", "\x0c", "\u2028"…).
        self._line_starts = [0] + [match.end() for match in re.finditer("\n", body)]
        self.anchors: list[_Tag] = []
        self.body_end: int | None = None

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._line_starts[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.anchors.append(_Tag(self._offset(), self.get_starttag_text() or "", attrs))

    def handle_endtag(self, tag: str) -> None:
        if tag == "body":
            self.body_end = self._offset()


def _href_span(raw: str) -> tuple[int, int] | None:
    """The span of the first `href` attribute's value (quotes included) inside a raw start tag."""
    name = _TAG_NAME.match(raw, 1)
    if name is None:
        return None
    position = name.end()
    while (match := _ATTRIBUTE.match(raw, position)) and match.end() > position:
        if match.group(1).lower() == "href":
            return (match.start(3), match.end(3)) if match.group(2) else None
        position = match.end()
    return None


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def clean_url(url: str) -> str:
    """The URL as a browser would follow it: outer whitespace and stray tabs/newlines removed."""
    return _URL_NOISE.sub("", url).strip(_C0_AND_SPACE)


def _trackable(url: str, own_prefixes: tuple[str, ...]) -> bool:
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    return scheme in {"http", "https"} and not url.startswith(own_prefixes)


def _pixel(public_url: str, secret_keys: Sequence[str], send_id: str) -> str:
    # Not display:none: a few clients skip hidden images, which would hide real opens.
    return (f'<img src="{html.escape(open_url(public_url, secret_keys, send_id))}" width="1" '
            'height="1" alt="" border="0" style="display:block;width:1px;height:1px;border:0;'
            'margin:0;padding:0">')


def instrument_html(body: str, *, public_url: str, secret_keys: Sequence[str],
                    send_id: str) -> tuple[str, list[str]]:
    """Rewrite tracked links and add the open pixel; return the HTML and the original URLs."""
    scanner = _Scanner(body)
    scanner.feed(body)
    # What the parser holds back is an unfinished construct (`<p class=` at the very end); a
    # pixel appended after it would be swallowed by it, so it goes in front.
    unfinished = len(scanner.rawdata)
    scanner.close()
    own_prefixes = (f"{public_url}/unsubscribe/", f"{public_url}/t/")
    links: list[str] = []
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement) in `body`, in order
    for tag in scanner.anchors:
        href = tag.attribute("href")
        if href is None or (tag.attribute("data-kraiter-track") or "").lower() == "off":
            continue
        url = clean_url(href)
        span = _href_span(tag.raw)
        # Both sanity checks guard against the parser and our tokeniser ever disagreeing: then
        # the link is left as it is rather than rewriting the wrong bytes.
        if (not _trackable(url, own_prefixes) or span is None
                or body[tag.start:tag.start + len(tag.raw)] != tag.raw
                or clean_url(html.unescape(_unquote(tag.raw[span[0]:span[1]]))) != url):
            continue
        tracked = click_url(public_url, secret_keys, send_id, len(links))
        links.append(url)
        edits.append((tag.start + span[0], tag.start + span[1], f'"{html.escape(tracked)}"'))
    pixel_at = len(body) - unfinished if scanner.body_end is None else scanner.body_end
    edits.append((pixel_at, pixel_at, _pixel(public_url, secret_keys, send_id)))
    edits.sort(key=lambda edit: edit[0])
    pieces: list[str] = []
    cursor = 0
    for start, end, replacement in edits:
        pieces += [body[cursor:start], replacement]
        cursor = end
    pieces.append(body[cursor:])
    return "".join(pieces), links


def safe_target(url: Any) -> str | None:
    """The stored link as a redirect target, or None when it is not a plain http(s) URL."""
    if not isinstance(url, str) or _UNSAFE_TARGET.search(url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
        return None
    return url


def _payload(secret_keys: Sequence[str], purpose: str, token: str) -> list[Any] | None:
    try:
        payload = tokens.read_token(secret_keys, purpose, token)
    except tokens.InvalidToken:
        return None
    if not isinstance(payload, list) or not payload or not isinstance(payload[0], str):
        return None
    return payload


def send_id_from_token(secret_keys: Sequence[str], purpose: str, token: str) -> str | None:
    """The send id inside an open or unsubscribe token, None if the token is not valid."""
    payload = _payload(secret_keys, purpose, token)
    return payload[0] if payload is not None and len(payload) == 1 else None


def click_from_token(secret_keys: Sequence[str], token: str) -> tuple[str, int] | None:
    """The (send id, link index) inside a click token, None if the token is not valid."""
    payload = _payload(secret_keys, tokens.CLICK, token)
    if payload is None or len(payload) != 2:
        return None
    index = payload[1]
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        return None
    return payload[0], index


def find_send(db: Session, *, send_id: str, lock: bool = False) -> Send | None:
    """The send, locked for the rest of the transaction if asked; None if unknown."""
    query = select(Send).where(Send.id == send_id)
    return db.scalars(query.with_for_update() if lock else query).first()


def _contact_subscribed(db: Session, send: Send, *, lock: bool) -> bool | None:
    """Whether the send's contact is subscribed; None once the contact has been deleted.

    A deleted contact's old e-mail must not bring the contact back (recording an event would
    create it again), so callers record nothing then. The row is share-locked when recording,
    so a concurrent delete waits for, and then removes, what we record.
    """
    query = select(Contact.subscribed).where(Contact.tenant_id == send.tenant_id,
                                             Contact.id == send.contact_id)
    return db.scalar(query.with_for_update(read=True) if lock else query)


def record_open(db: Session, *, send_id: str) -> bool:
    """Record an open of the send (every open is an event); False if there is nothing to record."""
    send = find_send(db, send_id=send_id, lock=True)
    if send is None or _contact_subscribed(db, send, lock=True) is None:
        return False
    lifecycle.mark_opened(db, send=send)
    return True


def click_target(db: Session, *, send_id: str, index: int, record: bool) -> str | None:
    """The original URL of the send's `index`-th link, recording the click if asked.

    None when the send or the link is unknown or the stored URL is not a safe target. The link
    still works once the contact is deleted; the click is just not recorded.
    """
    send = find_send(db, send_id=send_id, lock=record)
    if send is None or not isinstance(send.links, list) or index >= len(send.links):
        return None
    target = safe_target(send.links[index])
    if (target is not None and record
            and _contact_subscribed(db, send, lock=True) is not None):
        lifecycle.mark_clicked(db, send=send, url=target)
    return target


def is_unsubscribed(db: Session, *, send_id: str) -> bool | None:
    """Whether the send's contact has unsubscribed (or is deleted); None if the send is unknown."""
    send = find_send(db, send_id=send_id)
    if send is None:
        return None
    return not _contact_subscribed(db, send, lock=False)


def unsubscribe(db: Session, *, send_id: str) -> bool:
    """Unsubscribe the send's contact (idempotent); False if the send is unknown."""
    send = find_send(db, send_id=send_id, lock=True)
    if send is None:
        return False
    if _contact_subscribed(db, send, lock=True) is not None:
        lifecycle.mark_unsubscribed(db, send=send)
    return True
