"""The message every transport carries: envelope plus the RFC 5322 bytes, built in one pass.

The MIME structure is fixed (multipart/alternative: a text part, then an HTML part), so it is
written directly instead of through `email.message`: the standard library's object model parses
and re-folds every header and costs about ten times more, which matters at hundreds of messages
a second. The pieces that need care still come from the standard library: `formataddr` and
`Header` (RFC 2047 for non-ASCII names and subjects), `binascii.b2a_qp` (quoted-printable bodies),
`formatdate`, `make_msgid`. Tests parse the result back with `email` to check it.

Bodies that are ASCII with lines of at most 998 characters go as they are (7bit); anything else
is quoted-printable, which every relay accepts (no 8BITMIME needed). An address that is not
ASCII (a UTF-8 local part) is written raw, as RFC 6532 allows; such a message needs SMTPUTF8.
"""

from __future__ import annotations

import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass
from email import message_from_bytes
from email import policy
from email.header import Header
from email.message import EmailMessage
from email.utils import formataddr
from email.utils import formatdate
from email.utils import make_msgid
from email.utils import parseaddr
from email.utils import quote

MAX_LINE = 998  # RFC 5322, without the CRLF
SEND_ID_HEADER = "X-Kraiter-Send-Id"


@dataclass(frozen=True)
class OutgoingMessage:
    """A finished message: the SMTP envelope and the bytes to transmit (CRLF line ends)."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    send_id: str | None = None

    @property
    def needs_smtputf8(self) -> bool:
        """Whether an address is not ASCII (the server must offer SMTPUTF8)."""
        return not all(address.isascii() for address in (self.sender, *self.recipients))

    def parsed(self) -> EmailMessage:
        """The message parsed back (tests, the console transport)."""
        return message_from_bytes(self.data, policy=policy.default)


def split_address(value: str) -> tuple[str, str]:
    """(display name, address) of `Name <address>`; ValueError if there is no usable address."""
    name, address = parseaddr(value)
    local, _, domain = address.rpartition("@")
    if not local or ("." not in domain and domain != "localhost") or any(
            char in address for char in "\r\n<>"):
        raise ValueError(f"{value!r} is not a usable e-mail address")
    return name, address


def sender_domain(sender: str) -> str:
    """The domain of a `Name <address>` sender, for Message-IDs."""
    return split_address(sender)[1].rpartition("@")[2].lower()


def new_message_id(sender: str) -> str:
    """A fresh `<...@sender-domain>` Message-ID (the domain given, so no DNS lookup happens)."""
    return make_msgid(domain=sender_domain(sender))


def _ascii_domain(address: str) -> str:
    local, _, domain = address.rpartition("@")
    return address if domain.isascii() else f"{local}@{domain.encode('idna').decode('ascii')}"


def _header_line(name: str, value: str) -> str:
    """One header field; a non-ASCII or over-long value becomes RFC 2047 encoded words."""
    value = " ".join(value.split())  # never a line break inside a value (header injection)
    if value.isascii() and len(name) + len(value) + 2 <= MAX_LINE:
        return f"{name}: {value}\r\n"
    encoded = Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
    return f"{name}: {encoded}\r\n"


def _part(subtype: str, body: str) -> str:
    """A text/* body part, 7bit when it can be and quoted-printable otherwise."""
    lines = body.replace("\r\n", "\n").replace("\r", "\n")
    if lines.isascii() and all(len(line) <= MAX_LINE for line in lines.split("\n")):
        encoding, payload = "7bit", lines
    else:
        encoding = "quoted-printable"
        payload = binascii.b2a_qp(lines.encode("utf-8"), istext=True).decode("ascii")
    payload = payload.replace("\n", "\r\n")
    if not payload.endswith("\r\n"):
        payload += "\r\n"
    return (f"Content-Type: text/{subtype}; charset=\"utf-8\"\r\n"
            f"Content-Transfer-Encoding: {encoding}\r\n\r\n{payload}")


def build_message(*, sender: str, to: str, subject: str, text: str, html: str,
                  message_id: str, headers: Mapping[str, str] | None = None) -> OutgoingMessage:
    """A multipart/alternative message; ValueError if the sender or recipient is unusable."""
    name, address = split_address(sender)
    address, recipient = _ascii_domain(address), _ascii_domain(split_address(to)[1])
    # `=_` never occurs in quoted-printable text, and 128 random bits never in a 7bit one.
    boundary = f"=_{os.urandom(16).hex()}"
    try:
        from_field = formataddr((name, address), charset="utf-8")
    except UnicodeEncodeError:  # a UTF-8 address: RFC 6532 writes it (and its name) raw
        from_field = f'"{quote(name)}" <{address}>' if name else address
    head = [f"From: {from_field}\r\n", f"To: {recipient}\r\n", _header_line("Subject", subject),
            f"Date: {formatdate(usegmt=True)}\r\n", f"Message-ID: {message_id}\r\n"]
    head += [_header_line(field, value) for field, value in (headers or {}).items()]
    head.append(f"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; "
                f"boundary=\"{boundary}\"\r\n\r\n")
    data = "".join((*head, f"--{boundary}\r\n", _part("plain", text), f"--{boundary}\r\n",
                    _part("html", html), f"--{boundary}--\r\n"))
    return OutgoingMessage(sender=address, recipients=(recipient,),
                           data=data.encode("utf-8"),
                           send_id=(headers or {}).get(SEND_ID_HEADER))
