"""An SMTP server for tests and benchmarks (aiosmtpd), in a thread or as its own process.

It records every message whose content arrived (before it answers, so a message whose reply never
reached the client still counts: a real server may well deliver it), answers with a queue id as
Postfix does, and can be told to refuse recipients or messages with any reply, to stall after
DATA until released, to require TLS and a password.

    python -m tests.smtp_server --port 2525      # a sink for benchmarks: accepts and counts
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import ssl
import threading
import time
from dataclasses import dataclass
from email import message_from_bytes
from email import policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from aiosmtpd.smtp import LoginPassword

from tests.support import free_port

_queue_ids = itertools.count(1)


@dataclass
class Received:
    """One message as the server got it."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    queue_id: str
    accepted: bool = False  # answered 250 (false while stalled, or if refused after DATA)

    @property
    def message(self) -> EmailMessage:
        """The parsed message."""
        return message_from_bytes(self.data, policy=policy.default)


@dataclass
class _Refusal:
    reply: str
    times: int | None  # None: for ever


class SMTPServer:
    """A recording SMTP server on 127.0.0.1 in a background thread."""

    def __init__(self, *, port: int | None = None, record: bool = True,
                 tls_context: ssl.SSLContext | None = None, implicit_tls: bool = False,
                 credentials: tuple[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.record = record
        self.messages: list[Received] = []
        self.count = 0
        self.held = threading.Event()  # set once a message's reply is being held
        self._gate = threading.Event()
        self._gate.set()
        self._lock = threading.Lock()
        self._rcpt_refusals: dict[str, _Refusal] = {}
        self._data_refusals: list[_Refusal] = []
        self._mail_refusal: _Refusal | None = None
        self._drops = 0
        self._stall_at: int | None = None
        self._credentials = credentials
        kwargs: dict[str, Any] = {}
        if implicit_tls:
            kwargs.update(ssl_context=tls_context, server_hostname="localhost")
        elif tls_context is not None:
            kwargs.update(tls_context=tls_context)
        if credentials is not None:
            # aiosmtpd only counts STARTTLS as TLS; an implicit-TLS connection is one already.
            kwargs.update(authenticator=self._authenticate, auth_require_tls=not implicit_tls)
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port,
                                      enable_SMTPUTF8=True, **kwargs)

    @property
    def url(self) -> str:
        """`smtp://127.0.0.1:<port>` (set as SMTP_URL)."""
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> SMTPServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._gate.set()
        if self._controller._thread is not None:  # stopping twice is fine
            self._controller.stop()

    def refuse_recipient(self, address: str, reply: str, *, times: int | None = None) -> None:
        """Answer RCPT TO `address` with `reply` (e.g. `550 5.1.1 No such user`)."""
        with self._lock:
            self._rcpt_refusals[address.lower()] = _Refusal(reply, times)

    def refuse_sender(self, reply: str, *, times: int | None = None) -> None:
        """Answer MAIL FROM with `reply` (e.g. `553 5.7.1 Sender not allowed`)."""
        with self._lock:
            self._mail_refusal = _Refusal(reply, times)

    def refuse_message(self, reply: str, *, times: int | None = None) -> None:
        """Answer the end of the next message(s) with `reply` instead of accepting it."""
        with self._lock:
            self._data_refusals.append(_Refusal(reply, times))

    def drop_after_data(self, *, times: int = 1) -> None:
        """Close the connection instead of answering the next message(s): the client cannot
        know whether the message was taken."""
        with self._lock:
            self._drops = times

    def take_drop(self) -> bool:
        with self._lock:
            if self._drops <= 0:
                return False
            self._drops -= 1
            return True

    def reset(self) -> None:
        """Forget messages and refusals; answer normally again."""
        with self._lock:
            self.messages.clear()
            self._rcpt_refusals.clear()
            self._data_refusals.clear()
            self._mail_refusal = None
            self._drops = 0
        self._gate.set()

    def stall(self) -> None:
        """Hold the reply to every message from now on until `release()`."""
        self.held.clear()
        self._gate.clear()

    def stall_after(self, messages: int) -> None:
        """Answer the next `messages` messages, then hold replies as `stall()` does."""
        with self._lock:
            self._stall_at = self.count + messages + 1

    def release(self) -> None:
        self._gate.set()

    def received_for(self, send_id: str) -> list[Received]:
        """Messages carrying `X-Kraiter-Send-Id: send_id`."""
        with self._lock:
            messages = list(self.messages)
        return [m for m in messages if m.message["X-Kraiter-Send-Id"] == send_id]

    def _take(self, refusal: _Refusal | None) -> str | None:
        if refusal is None or refusal.times == 0:
            return None
        if refusal.times is not None:
            refusal.times -= 1
        return refusal.reply

    def mail_reply(self) -> str | None:
        with self._lock:
            return self._take(self._mail_refusal)

    def rcpt_reply(self, address: str) -> str | None:
        with self._lock:
            return self._take(self._rcpt_refusals.get(address.lower()))

    def data_reply(self) -> str | None:
        with self._lock:
            for refusal in self._data_refusals:
                reply = self._take(refusal)
                if reply is not None:
                    return reply
        return None

    def store(self, received: Received) -> None:
        with self._lock:
            self.count += 1
            if self.record:
                self.messages.append(received)
            if self._stall_at is not None and self.count >= self._stall_at:
                self._stall_at = None
                self.stall()

    async def wait_gate(self) -> None:
        if not self._gate.is_set():
            self.held.set()
        while not self._gate.is_set():
            await asyncio.sleep(0.02)

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and self._credentials == (
            data.login.decode(), data.password.decode())
        return AuthResult(success=ok, handled=False)


class _Handler:
    def __init__(self, server: SMTPServer) -> None:
        self.server = server

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        refusal = self.server.mail_reply()
        if refusal is not None:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        refusal = self.server.rcpt_reply(address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        queue_id = f"{next(_queue_ids):06X}{int(time.time() * 1000) % 10**8:08d}"
        received = Received(mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos),
                            data=bytes(envelope.original_content or envelope.content),
                            queue_id=queue_id)
        self.server.store(received)
        await self.server.wait_gate()
        if self.server.take_drop():
            server.transport.close()
            return "421 4.3.0 closing"  # never reaches the client
        refusal = self.server.data_reply()
        if refusal is not None:
            return refusal
        received.accepted = True
        return f"250 2.0.0 Ok: queued as {queue_id}"


def main() -> None:
    """Run a counting sink until interrupted (benchmarks start it as a separate process)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=2525)
    args = parser.parse_args()
    server = SMTPServer(port=args.port, record=False).start()
    print(f"listening on 127.0.0.1:{server.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
