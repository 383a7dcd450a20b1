"""The SMTP transport against a real (in-process) SMTP server."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.transports import FatalError
from app.transports import PermanentError
from app.transports import TransientError
from app.transports.message import OutgoingMessage
from app.transports.message import build_message
from app.transports.smtp import SMTPTransport
from app.transports.smtp import parse_smtp_url
from app.transports.smtp import queue_id
from tests.smtp_server import SMTPServer
from tests.support import free_port


@pytest.fixture
def server() -> Iterator[SMTPServer]:
    smtp = SMTPServer().start()
    yield smtp
    smtp.stop()


def _message(to: str = "ann@example.com", send_id: str = "snd_1") -> OutgoingMessage:
    return build_message(sender="Acme <hello@acme.test>", to=to, subject="Hello",
                         text="Hi\n.a line starting with a dot\n", html="<p>Hi</p>",
                         message_id="<1@acme.test>", headers={"X-Kraiter-Send-Id": send_id})


def _transport(url: str, timeout: float = 5.0) -> SMTPTransport:
    return SMTPTransport.from_url(url, timeout=timeout)


@pytest.mark.parametrize(("reply", "expected"), [
    ("2.0.0 Ok: queued as 4Bz1Xy0Q2Lz", "4Bz1Xy0Q2Lz"),
    ("OK id=1rAbCd-000XyZ-Q1", "1rAbCd-000XyZ-Q1"),
    ("Ok 0100018c1f8b7e2a-5a1c2d3e-000000", "0100018c1f8b7e2a-5a1c2d3e-000000"),
    ("2.0.0 OK  1700000000 d2-20020a05.123 - gsmtp", "1700000000 d2-20020a05.123 - gsmtp"),
    ("OK", None),
    ("2.0.0 Ok", None),
])
def test_the_queue_id_is_read_from_the_final_reply(reply: str, expected: str | None) -> None:
    assert queue_id(reply) == expected


def test_smtp_urls() -> None:
    plain = parse_smtp_url("smtp://user%40x:p%3Ass@mail.example:587")
    assert (plain.host, plain.port, plain.username, plain.password, plain.implicit_tls) == (
        "mail.example", 587, "user@x", "p:ss", False)
    assert parse_smtp_url("smtps://mail.example").port == 465
    assert parse_smtp_url("smtp://mail.example").port == 25
    for bad in ("http://mail.example", "smtp://", "smtp://host:notaport"):
        with pytest.raises(ValueError):
            parse_smtp_url(bad)


def test_a_message_is_delivered_and_its_queue_id_kept(server: SMTPServer) -> None:
    transport = _transport(server.url)

    provider_id = transport.send(_message())

    [received] = server.messages
    assert provider_id == received.queue_id and received.accepted
    assert (received.mail_from, received.rcpt_tos) == ("hello@acme.test", ["ann@example.com"])
    text, _html = received.message.iter_parts()
    # Dot-stuffed on the wire, restored by the server.
    assert text.get_content().splitlines() == ["Hi", ".a line starting with a dot"]
    transport.close()


def test_one_connection_serves_many_messages_and_survives_a_server_restart(
        server: SMTPServer) -> None:
    transport = _transport(server.url)
    for _ in range(3):
        transport.send(_message())
    server.stop()
    restarted = SMTPServer(port=server.port).start()
    try:
        # The kept connection is dead; nothing was handed over, so it reconnects and sends.
        assert transport.send(_message()) is not None
        assert len(restarted.messages) == 1
    finally:
        restarted.stop()
        transport.close()


def test_refusals_map_to_the_three_errors(server: SMTPServer) -> None:
    transport = _transport(server.url)
    server.refuse_recipient("gone@example.com", "550 5.1.1 No such user")
    server.refuse_recipient("full@example.com", "452 4.2.2 Mailbox full")

    with pytest.raises(PermanentError) as hard:
        transport.send(_message("gone@example.com"))
    with pytest.raises(TransientError) as soft:
        transport.send(_message("full@example.com"))
    server.refuse_message("554 5.7.1 Rejected as spam", times=1)
    with pytest.raises(PermanentError):
        transport.send(_message())
    server.refuse_message("451 4.3.0 Try again", times=1)
    with pytest.raises(TransientError):
        transport.send(_message())

    assert (hard.value.code, soft.value.code) == (550, 452)
    assert "No such user" in hard.value.reason
    # The connection is still usable after the refusals (RSET between transactions).
    assert transport.send(_message()) is not None
    assert [m.accepted for m in server.messages] == [False, False, True]
    transport.close()


def test_a_connection_lost_after_the_message_is_fatal_not_retried(server: SMTPServer) -> None:
    transport = _transport(server.url)
    server.drop_after_data()

    with pytest.raises(FatalError) as lost:
        transport.send(_message())

    assert "not retried" in lost.value.reason
    assert len(server.messages) == 1  # the server may well deliver it: never send it again
    assert transport.send(_message()) is not None  # a fresh connection for the next one
    transport.close()


def test_a_reply_that_never_comes_is_fatal(server: SMTPServer) -> None:
    transport = _transport(server.url, timeout=0.5)
    server.stall()
    try:
        with pytest.raises(FatalError):
            transport.send(_message())
    finally:
        server.release()
        transport.close()


def test_no_server_is_a_transient_error() -> None:
    with pytest.raises(TransientError):
        _transport(f"smtp://127.0.0.1:{free_port()}").send(_message())


def test_a_refused_sender_fails_without_blaming_the_recipient(server: SMTPServer) -> None:
    transport = _transport(server.url)
    server.refuse_sender("553 5.7.1 Sender not allowed", times=1)

    with pytest.raises(FatalError) as refused:
        transport.send(_message())

    assert refused.value.code == 553
    assert transport.send(_message()) is not None
    transport.close()


def test_an_smtputf8_recipient(server: SMTPServer) -> None:
    transport = _transport(server.url)

    transport.send(_message("jösé@example.com"))

    [received] = server.messages
    assert received.rcpt_tos == ["jösé@example.com"]
    assert received.message["To"] == "jösé@example.com"
    transport.close()


# --- TLS and authentication ----------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A self-signed certificate for localhost that the client trusts (SSL_CERT_FILE)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


@pytest.mark.parametrize("implicit_tls", [False, True], ids=["starttls", "smtps"])
def test_tls_and_login(certificate: ssl.SSLContext, implicit_tls: bool) -> None:
    server = SMTPServer(tls_context=certificate, implicit_tls=implicit_tls,
                        credentials=("mailer", "s3cret")).start()
    scheme = "smtps" if implicit_tls else "smtp"
    good = _transport(f"{scheme}://mailer:s3cret@127.0.0.1:{server.port}")
    try:
        assert good.send(_message()) is not None
        with pytest.raises(FatalError) as refused:
            _transport(f"{scheme}://mailer:wrong@127.0.0.1:{server.port}").send(_message())
    finally:
        good.close()
        server.stop()
    assert refused.value.code == 535
    assert len(server.messages) == 1


def test_an_untrusted_certificate_is_fatal(certificate: ssl.SSLContext,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE")
    server = SMTPServer(tls_context=certificate, implicit_tls=True).start()
    try:
        with pytest.raises(FatalError):
            _transport(f"smtps://127.0.0.1:{server.port}").send(_message())
    finally:
        server.stop()
