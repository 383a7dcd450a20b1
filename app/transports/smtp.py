"""The `smtp` transport: any SMTP server or provider relay, configured by `SMTP_URL`.

`smtp://user:pass@host:port` upgrades with STARTTLS when the server offers it; `smtps://` speaks
TLS from the first byte. The transport drives MAIL, RCPT and DATA itself (rather than
`sendmail`) for two reasons: it keeps the final 250 reply, whose queue id is the provider's id
for the message (bounce and delivery feedback refer to it), and it knows exactly how far a
failed conversation got. Before the end-of-data marker has been written nothing was accepted and
a retry is safe; once it has, a lost reply means the server may have the message, so that
outcome is reported as fatal rather than retried into a duplicate.

Each worker thread keeps its connection open between messages; a connection that went stale
while idle is replaced once, transparently, because nothing had been handed over yet.
"""

from __future__ import annotations

import functools
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote
from urllib.parse import urlsplit

from app.transports import FatalError
from app.transports import PermanentError
from app.transports import TransientError
from app.transports.message import OutgoingMessage

DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
# Some relays cap messages per connection; reconnecting now and then stays under any such cap.
MAX_MESSAGES_PER_CONNECTION = 100
_QUEUED_AS = re.compile(r"queued as\s+<?([^\s>]+)>?", re.IGNORECASE)
_ID_EQUALS = re.compile(r"\bid=<?([^\s>]+)>?", re.IGNORECASE)
_ENHANCED_CODE = re.compile(r"^\d\.\d{1,3}\.\d{1,3}\s*")
_OK_WORD = re.compile(r"^(ok|accepted|queued|message accepted)\b[:\s]*", re.IGNORECASE)
_LEADING_DOT = re.compile(rb"(?m)^\.")
_LOST_AFTER_DATA = ("connection lost after the message was handed over ({error}); the server may "
                    "have accepted it, so it is not retried (that could send it twice)")


@dataclass(frozen=True)
class SMTPConfig:
    """Where and how to connect, parsed from `SMTP_URL`."""

    host: str
    port: int
    username: str | None
    password: str | None
    implicit_tls: bool
    timeout: float


def parse_smtp_url(url: str, *, timeout: float = 30.0) -> SMTPConfig:
    """Parse `smtp://user:pass@host:port` or `smtps://...`; ValueError if it is not one."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError("SMTP_URL must look like smtp://user:pass@host:port (or smtps://...)")
    return SMTPConfig(
        host=parts.hostname,
        port=parts.port or DEFAULT_PORTS[parts.scheme],  # .port raises ValueError if invalid
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        implicit_tls=parts.scheme == "smtps",
        timeout=timeout,
    )


def queue_id(reply: str) -> str | None:
    """The server's id for an accepted message, from the text of its final 250 reply.

    Postfix says `Ok: queued as 4Xyz`, Exim `OK id=1rA-00B`, Amazon SES `Ok <message id>`; a reply
    without anything id-like (`250 OK`) gives None rather than a string shared by every message.
    """
    text = reply.strip()
    match = _QUEUED_AS.search(text) or _ID_EQUALS.search(text)
    if match:
        return match.group(1)[:255]
    rest = _OK_WORD.sub("", _ENHANCED_CODE.sub("", text)).strip()
    return rest[:255] if any(char.isdigit() for char in rest) else None


@functools.cache
def _local_hostname() -> str:
    # smtplib would look the name up on every connect, and that lookup can take seconds.
    return socket.getfqdn()


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _refusal(code: int, reply: bytes | str, stage: str) -> TransientError | PermanentError:
    reason = f"{stage}: {_text(reply)}".strip()
    if 500 <= code < 600:
        return PermanentError(code, reason)
    return TransientError(code if code > 0 else None, reason)


class _StaleConnection(Exception):
    """A kept-open connection turned out dead before the server accepted anything."""


class _Connection(threading.local):
    smtp: smtplib.SMTP | None = None
    sent: int = 0


class SMTPTransport:
    """Sends through one SMTP server, one kept-open connection per thread."""

    name = "smtp"

    def __init__(self, config: SMTPConfig) -> None:
        self.config = config
        self._local = _Connection()
        self._tls: ssl.SSLContext | None = None

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 30.0) -> SMTPTransport:
        """A transport for `SMTP_URL`."""
        return cls(parse_smtp_url(url, timeout=timeout))

    def send(self, message: OutgoingMessage) -> str | None:
        if not message.recipients:
            raise FatalError(None, "the message has no recipient")
        reused = self._local.smtp is not None
        try:
            return self._transact(self._connection(), message)
        except _StaleConnection as stale:
            self.close()
            if not reused:
                raise TransientError(None, f"connection refused the message: {stale}") from None
        return self._transact(self._connection(), message)

    def close(self) -> None:
        smtp, self._local.smtp, self._local.sent = self._local.smtp, None, 0
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def _connection(self) -> smtplib.SMTP:
        if self._local.smtp is None:
            self._local.smtp, self._local.sent = self._connect(), 0
        return self._local.smtp

    def _connect(self) -> smtplib.SMTP:
        config = self.config
        where = f"{config.host}:{config.port}"
        try:
            smtp = self._open()
        except smtplib.SMTPAuthenticationError as error:
            raise FatalError(error.smtp_code, f"authentication at {where} failed: "
                             f"{_text(error.smtp_error)}") from error
        except smtplib.SMTPNotSupportedError as error:
            raise FatalError(None, f"{where} does not offer what SMTP_URL needs: {error}"
                             ) from error
        except ssl.SSLCertVerificationError as error:
            raise FatalError(None, f"TLS certificate of {where} not trusted: {error}") from error
        except smtplib.SMTPResponseException as error:
            raise TransientError(error.smtp_code, f"{where} refused the connection: "
                                 f"{_text(error.smtp_error)}") from error
        except (smtplib.SMTPException, OSError) as error:
            raise TransientError(None, f"cannot connect to {where}: {error}") from error
        return smtp

    def _open(self) -> smtplib.SMTP:
        config = self.config
        smtp: smtplib.SMTP
        if config.implicit_tls:
            smtp = smtplib.SMTP_SSL(config.host, config.port, local_hostname=_local_hostname(),
                                    timeout=config.timeout, context=self._tls_context())
        else:
            smtp = smtplib.SMTP(config.host, config.port, local_hostname=_local_hostname(),
                                timeout=config.timeout)
        try:
            smtp.ehlo_or_helo_if_needed()
            if not config.implicit_tls and smtp.has_extn("starttls"):
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()
            if config.username:
                smtp.login(config.username, config.password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _transact(self, smtp: smtplib.SMTP, message: OutgoingMessage) -> str | None:
        needs_utf8 = message.needs_smtputf8
        if needs_utf8 and not smtp.has_extn("smtputf8"):
            raise FatalError(None, "the address needs SMTPUTF8, which the server does not offer")
        options = ["SMTPUTF8", "BODY=8BITMIME"] if needs_utf8 else []
        self._mail(smtp, message.sender, options)
        for recipient in message.recipients:
            self._command(smtp, functools.partial(smtp.rcpt, recipient), "RCPT", {250, 251})
        self._command(smtp, lambda: smtp.docmd("DATA"), "DATA", {354})
        reply = self._hand_over(smtp, message.data)
        self._local.sent += 1
        if self._local.sent >= MAX_MESSAGES_PER_CONNECTION:
            self.close()
        return queue_id(reply)

    def _mail(self, smtp: smtplib.SMTP, sender: str, options: list[str]) -> None:
        """MAIL FROM; on a dead kept-open connection (or a 421 goodbye) raise _StaleConnection."""
        try:
            code, reply = smtp.mail(sender, options)
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            raise _StaleConnection(str(error)) from error
        if code == 421:
            raise _StaleConnection(_text(reply))
        if code != 250:
            self._reset(smtp)
            if 500 <= code < 600:  # the sender is refused: not the recipient's fault, no bounce
                raise FatalError(code, f"MAIL FROM refused: {_text(reply)}")
            raise TransientError(code if code > 0 else None, f"MAIL FROM: {_text(reply)}")

    def _command(self, smtp: smtplib.SMTP, command: Callable[[], tuple[int, bytes]], stage: str,
                 expected: set[int]) -> None:
        try:
            code, reply = command()
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            self.close()
            raise TransientError(None, f"{stage}: connection lost ({error})") from error
        if code not in expected:
            if code == 421:
                self.close()
            else:
                self._reset(smtp)
            raise _refusal(code, reply, stage)

    def _hand_over(self, smtp: smtplib.SMTP, payload: bytes) -> str:
        """Send the message and the end-of-data marker; return the text of the final reply."""
        data = _LEADING_DOT.sub(b"..", payload)
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        try:
            smtp.send(data + b".\r\n")
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            # sendall failed, so the marker was not (completely) written: nothing was accepted.
            self.close()
            raise TransientError(None, f"DATA: connection lost ({error})") from error
        try:
            code, reply = smtp.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            self.close()
            raise FatalError(None, _LOST_AFTER_DATA.format(error=error)) from error
        if 200 <= code < 300:
            return _text(reply)
        if code == 421:
            self.close()
        if code < 400:  # not a reply SMTP allows here; whether it was accepted is unknown
            self.close()
            raise FatalError(code, f"unexpected reply to the message: {_text(reply)}")
        raise _refusal(code, reply, "message")

    def _reset(self, smtp: smtplib.SMTP) -> None:
        try:
            smtp.rset()
        except (smtplib.SMTPException, OSError):
            self.close()
