"""The local transports (file, console, memory), picking one, and the message they carry."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest

from app.config import Settings
from app.transports import FatalError
from app.transports import get_transport
from app.transports import make_transport
from app.transports import memory
from app.transports.console import ConsoleTransport
from app.transports.file import FileTransport
from app.transports.message import OutgoingMessage
from app.transports.message import build_message
from app.transports.message import new_message_id

UNSUBSCRIBE = "<http://localhost:8000/unsubscribe/" + "Wy" * 60 + ">"


def _message(send_id: str = "snd_01JABCDEF", **overrides: str) -> OutgoingMessage:
    fields = {"sender": "Acme Café <hello@acme.test>", "to": "ann@example.com",
              "subject": "Your order\nis on its way — ünïcode", "text": "Hello é\n",
              "html": "<p>" + "long line " * 200 + "</p>", **overrides}
    return build_message(message_id=new_message_id(fields["sender"]), headers={
        "X-Kraiter-Send-Id": send_id, "List-Unsubscribe": UNSUBSCRIBE,
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}, **fields)


def test_the_message_parses_back_with_every_header_intact() -> None:
    message = _message()
    parsed = message.parsed()

    assert parsed["Subject"] == "Your order is on its way — ünïcode"
    assert parsed["From"].addresses[0].display_name == "Acme Café"
    assert parsed["To"] == "ann@example.com"
    # Not folded into encoded words: mail clients read this header literally (RFC 8058).
    assert parsed["List-Unsubscribe"] == UNSUBSCRIBE
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["Message-ID"].endswith("@acme.test>")
    assert parsed.get_content_type() == "multipart/alternative"
    text, html = parsed.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert text.get_content().splitlines() == ["Hello é"]
    assert html.get_content_type() == "text/html" and "long line" in html.get_content()
    # Every line fits SMTP's limit, whatever the body.
    assert max(len(line) for line in message.data.split(b"\r\n")) <= 998
    assert b"\n" not in message.data.replace(b"\r\n", b"")
    assert (message.sender, message.recipients) == ("hello@acme.test", ("ann@example.com",))


@pytest.mark.parametrize("sender", ["nobody", "", "<>", "Name <no-at-sign>"])
def test_an_unusable_sender_is_refused(sender: str) -> None:
    with pytest.raises(ValueError):
        _message(sender=sender)


def test_the_file_transport_writes_one_parseable_eml(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    transport = FileTransport(outbox)

    assert transport.send(_message("snd_01JAAA")) is None
    transport.send(_message("snd_01JBBB"))

    assert sorted(path.name for path in outbox.iterdir()) == ["snd_01JAAA.eml", "snd_01JBBB.eml"]
    parsed = OutgoingMessage("", (), (outbox / "snd_01JAAA.eml").read_bytes()).parsed()
    assert parsed["X-Kraiter-Send-Id"] == "snd_01JAAA"
    assert parsed["List-Unsubscribe"] == UNSUBSCRIBE


def test_the_file_transport_refuses_a_send_id_that_is_not_a_file_name(tmp_path: Path) -> None:
    with pytest.raises(FatalError):
        FileTransport(tmp_path).send(_message("../../etc/passwd"))
    assert list(tmp_path.iterdir()) == []


def test_the_console_transport_prints_the_message() -> None:
    stream = io.StringIO()

    ConsoleTransport(stream).send(_message())

    printed = stream.getvalue()
    assert "X-Kraiter-Send-Id: snd_01JABCDEF" in printed and "List-Unsubscribe-Post" in printed


def test_the_memory_transport_keeps_messages_in_the_process() -> None:
    memory.clear()
    transport = memory.MemoryTransport()

    transport.send(_message())

    assert [m.send_id for m in memory.outbox] == ["snd_01JABCDEF"]
    memory.clear()


def test_email_transport_picks_the_transport(settings: Settings, tmp_path: Path) -> None:
    def pick(name: str, smtp_url: str | None = None) -> str:
        chosen = make_transport(dataclasses.replace(settings, email_transport=name,
                                                    smtp_url=smtp_url, data_dir=tmp_path))
        return type(chosen).__name__

    assert pick("file") == "FileTransport"
    assert pick("console") == "ConsoleTransport"
    assert pick("memory") == "MemoryTransport"
    assert pick("smtp", "smtp://mail.example:587") == "SMTPTransport"
    # Misconfigured SMTP fails each send with the reason instead of crashing the worker.
    for url in (None, "mail.example"):
        unconfigured = make_transport(dataclasses.replace(settings, email_transport="smtp",
                                                          smtp_url=url))
        with pytest.raises(FatalError, match="SMTP_URL"):
            unconfigured.send(_message())


def test_the_transport_is_made_once_per_process(settings: Settings) -> None:
    assert get_transport(settings) is get_transport(settings)


def test_names_with_specials_and_international_domains() -> None:
    message = _message(sender='"Shop, Inc." <orders@shop.example>', to="ann@exämple.com")
    parsed = message.parsed()

    assert parsed["From"].addresses[0].display_name == "Shop, Inc."
    assert message.recipients == ("ann@xn--exmple-cua.com",)  # IDNA: plain SMTP can carry it
    assert not message.needs_smtputf8
