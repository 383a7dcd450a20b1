"""E-mail transports: one interface, picked by `EMAIL_TRANSPORT`.

A transport hands one finished message to whatever carries it (an SMTP server, a folder, the
console, a list in memory) and returns the carrier's id for it, if it gives one. It raises one of
three errors, and the caller's reaction depends only on which:

* `TransientError`: the message was certainly not accepted and trying again later may work
  (4xx replies, connection errors, timeouts before the message was handed over);
* `PermanentError`: the recipient was refused for good (5xx to RCPT or to the message);
* `FatalError`: the message cannot go out and retrying would not help or could send it twice
  (bad credentials, sender refused, the connection lost after the message was handed over).
"""

from __future__ import annotations

import os
import threading
from typing import Protocol

from app.config import Settings
from app.transports.message import OutgoingMessage


class TransportError(Exception):
    """A message that did not (or may not) go out; `code` is the SMTP reply code if any."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"{code} {reason}" if code else reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code} {self.reason}" if self.code else self.reason


class TransientError(TransportError):
    """Not accepted this time; the same message may be tried again later."""


class PermanentError(TransportError):
    """The recipient (or this message for them) was refused for good: a hard bounce."""


class FatalError(TransportError):
    """Neither a bounce nor worth retrying: configuration, sender refused, or an unknown outcome."""


class Transport(Protocol):
    """Hands a finished message to its carrier."""

    name: str

    def send(self, message: OutgoingMessage) -> str | None:
        """Transmit `message`; return the carrier's id for it, or None if it gives none."""
        ...

    def close(self) -> None:
        """Release connections (the next send opens new ones)."""
        ...


class Unconfigured:
    """Stands in for a transport whose settings are missing, so each send fails saying why."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def send(self, message: OutgoingMessage) -> str | None:
        raise FatalError(None, self.reason)

    def close(self) -> None:
        return None


def make_transport(settings: Settings) -> Transport:
    """A new transport for `settings.email_transport`."""
    name = settings.email_transport
    if name == "smtp":
        from app.transports.smtp import SMTPTransport

        if not settings.smtp_url:
            return Unconfigured("smtp", "EMAIL_TRANSPORT is smtp but SMTP_URL is not set.")
        try:
            return SMTPTransport.from_url(settings.smtp_url, timeout=settings.smtp_timeout_s)
        except ValueError as error:
            return Unconfigured("smtp", str(error))
    if name == "file":
        from app.transports.file import FileTransport

        return FileTransport(settings.data_dir / "outbox")
    if name == "console":
        from app.transports.console import ConsoleTransport

        return ConsoleTransport()
    if name == "memory":
        from app.transports.memory import MemoryTransport

        return MemoryTransport()
    raise ValueError(f"unknown EMAIL_TRANSPORT {name!r}")


_cache: dict[tuple[int, str, str | None, str], Transport] = {}
_cache_lock = threading.Lock()


def get_transport(settings: Settings) -> Transport:
    """This process's transport for `settings`, made once and reused (SMTP keeps connections).

    Keyed by the process id too: a prefork child must never use a socket its parent opened.
    """
    key = (os.getpid(), settings.email_transport, settings.smtp_url, str(settings.data_dir))
    with _cache_lock:
        transport = _cache.get(key)
        if transport is None:
            transport = _cache[key] = make_transport(settings)
        return transport
