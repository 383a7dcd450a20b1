"""SNS message checks: trusted hosts, the canonical string, signatures, the certificate cache.

The helpers at the top sign messages exactly as SNS does, with a throwaway key pair and a
self-signed certificate made here; the webhook tests import them.
"""

from __future__ import annotations

import base64
import functools
import json
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.x509.oid import NameOID

from app.errors import BadRequest
from app.errors import Forbidden
from app.errors import ServiceUnavailable
from app.services import sns

AWS_HOSTS = ("sns.*.amazonaws.com",)
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"
TOPIC = "arn:aws:sns:us-east-1:123456789012:kraiter-ses-feedback"
# What SNS signs, per the AWS page "Verifying the signatures of Amazon SNS messages".
NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                     "Type")


@dataclass(frozen=True)
class SigningKey:
    """A private key and the PEM certificate SNS would serve for it."""

    private_key: rsa.RSAPrivateKey
    pem: bytes


def _certificate(key: rsa.RSAPrivateKey, *, not_before: datetime, not_after: datetime) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(not_before).not_valid_after(not_after)
                   .sign(key, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.PEM)


@functools.cache
def signing_key(*, expired: bool = False) -> SigningKey:
    """A throwaway RSA key with a self-signed certificate (valid now unless `expired`)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    window = (now - timedelta(days=3), now - timedelta(days=1)) if expired else (
        now - timedelta(days=1), now + timedelta(days=1))
    return SigningKey(key, _certificate(key, not_before=window[0], not_after=window[1]))


def sign(message: dict[str, Any], *, version: str = "2", key: SigningKey | None = None
         ) -> dict[str, Any]:
    """Add SignatureVersion and Signature to an SNS message, computed the way SNS does."""
    keys = NOTIFICATION_KEYS if message["Type"] == "Notification" else CONFIRMATION_KEYS
    text = "".join(f"{name}\n{message[name]}\n" for name in keys if name in message)
    # SignatureVersion 1 is SHA1withRSA, as SNS still signs it.
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303
    signature = (key or signing_key()).private_key.sign(text.encode(), PKCS1v15(), algorithm)
    return {**message, "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode()}


def envelope(message: str, *, message_id: str = "a5b1c9e2-0000-4000-8000-000000000001",
             topic: str = TOPIC, cert_url: str = CERT_URL, kind: str = "Notification",
             **extra: str) -> dict[str, Any]:
    """An unsigned SNS message as SNS posts it."""
    return {"Type": kind, "MessageId": message_id, "TopicArn": topic, "Message": message,
            "Timestamp": "2026-03-01T12:00:00.000Z", "SigningCertURL": cert_url,
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe", **extra}


def _parsed(data: dict[str, Any]) -> sns.SnsMessage:
    return sns.parse_message(json.dumps(data).encode())


def _cache_serving(pem: bytes) -> tuple[sns.CertificateCache, list[str]]:
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return pem

    return sns.CertificateCache(fetch=fetch), fetched


@pytest.mark.parametrize("url", [
    CERT_URL,
    "https://sns.eu-west-2.amazonaws.com/SimpleNotificationService-1.pem",
    "https://SNS.AP-SOUTHEAST-1.amazonaws.com:443/x.pem",
])
def test_certificates_on_aws_sns_hosts_are_trusted(url: str) -> None:
    assert sns.trusted_url(url, AWS_HOSTS)


@pytest.mark.parametrize("url", [
    "http://sns.us-east-1.amazonaws.com/x.pem",
    "https://sns.us-east-1.amazonaws.com:8443/x.pem",
    "https://sns.us-east-1.amazonaws.com.evil.test/x.pem",
    "https://evil.test/sns.us-east-1.amazonaws.com/x.pem",
    "https://sns.us-east-1.amazonaws.com@evil.test/x.pem",
    "https://user@sns.us-east-1.amazonaws.com/x.pem",
    "https://sns.amazonaws.com/x.pem",
    "https://sqs.us-east-1.amazonaws.com/x.pem",
    "https://sns.us_east_1.amazonaws.com/x.pem",
    "https://evil.sns.us-east-1.amazonaws.com/x.pem",
    "https://sns.us-east-1.amazonaws.com:bad/x.pem",
    "file:///etc/passwd",
    "not a url",
    "",
])
def test_anything_else_is_not_trusted(url: str) -> None:
    assert not sns.trusted_url(url, AWS_HOSTS)


def test_an_origin_entry_trusts_exactly_that_scheme_host_and_port() -> None:
    hosts = (*AWS_HOSTS, "http://127.0.0.1:8025")

    assert sns.trusted_url("http://127.0.0.1:8025/cert.pem", hosts)
    assert not sns.trusted_url("http://127.0.0.1:8026/cert.pem", hosts)
    assert not sns.trusted_url("https://127.0.0.1:8025/cert.pem", hosts)
    assert not sns.trusted_url("http://localhost:8025/cert.pem", hosts)


def test_the_signing_string_follows_the_message_type() -> None:
    notification = _parsed(sign(envelope("hello", Subject="Hi")))
    confirmation = _parsed(sign(envelope("join", kind="SubscriptionConfirmation", Token="tok",
                                         SubscribeURL="https://sns.us-east-1.amazonaws.com/?x")))

    assert sns.signing_string(notification) == (
        f"Message\nhello\nMessageId\n{notification.message_id}\nSubject\nHi\n"
        f"Timestamp\n2026-03-01T12:00:00.000Z\nTopicArn\n{TOPIC}\nType\nNotification\n"
    ).encode()
    assert sns.signing_string(confirmation) == (
        f"Message\njoin\nMessageId\n{confirmation.message_id}\n"
        "SubscribeURL\nhttps://sns.us-east-1.amazonaws.com/?x\n"
        f"Timestamp\n2026-03-01T12:00:00.000Z\nToken\ntok\nTopicArn\n{TOPIC}\n"
        "Type\nSubscriptionConfirmation\n"
    ).encode()


def test_a_null_subject_is_left_out_of_the_signing_string() -> None:
    message = _parsed({**sign(envelope("hello")), "Subject": None})

    assert b"Subject" not in sns.signing_string(message)


@pytest.mark.parametrize(("body", "field"), [
    (b"{not json", None),
    (b"\xff\xfe", None),
    (b'["Type"]', None),
    (json.dumps({"Type": "Gossip"}).encode(), "Type"),
    (json.dumps({k: v for k, v in sign(envelope("x")).items() if k != "Signature"}).encode(),
     "Signature"),
    (json.dumps({**sign(envelope("x")), "Message": {"nested": True}}).encode(), "Message"),
    (json.dumps(sign(envelope("x", kind="SubscriptionConfirmation",
                              SubscribeURL="https://sns.us-east-1.amazonaws.com/"))).encode(),
     "Token"),
])
def test_malformed_messages_are_bad_requests(body: bytes, field: str | None) -> None:
    with pytest.raises(BadRequest) as raised:
        sns.parse_message(body)

    if field is not None:
        assert field in (raised.value.details or {})


def test_the_type_header_must_match_the_body() -> None:
    with pytest.raises(BadRequest):
        sns.parse_message(json.dumps(sign(envelope("x"))).encode(),
                          type_header="SubscriptionConfirmation")


@pytest.mark.parametrize("version", ["1", "2"])
def test_both_signature_versions_verify_and_the_certificate_is_fetched_once(version: str) -> None:
    cache, fetched = _cache_serving(signing_key().pem)
    first = _parsed(sign(envelope("one"), version=version))
    second = _parsed(sign(envelope("two", message_id="other"), version=version))

    sns.verify(first, topic_arns=(TOPIC,), trusted_hosts=AWS_HOSTS, cache=cache)
    sns.verify(second, topic_arns=(TOPIC,), trusted_hosts=AWS_HOSTS, cache=cache)

    assert fetched == [CERT_URL]


@pytest.mark.parametrize("change", [
    {"Message": "changed"},
    {"Subject": "added after signing"},
    {"Timestamp": "2026-03-01T12:00:01.000Z"},
    {"SignatureVersion": "1"},
])
def test_a_changed_message_does_not_verify(change: dict[str, str]) -> None:
    cache, _ = _cache_serving(signing_key().pem)
    message = _parsed({**sign(envelope("original")), **change})

    with pytest.raises(Forbidden):
        sns.verify(message, topic_arns=(), trusted_hosts=AWS_HOSTS, cache=cache)


def test_another_keys_signature_does_not_verify() -> None:
    cache, _ = _cache_serving(signing_key().pem)
    message = _parsed(sign(envelope("x"), key=signing_key(expired=True)))

    with pytest.raises(Forbidden):
        sns.verify(message, topic_arns=(), trusted_hosts=AWS_HOSTS, cache=cache)


@pytest.mark.parametrize("change", [
    {"SignatureVersion": "3"},
    {"Signature": "not base64!"},
    {"TopicArn": "arn:aws:sns:us-east-1:999999999999:someone-else"},
    {"SigningCertURL": "https://example.com/SimpleNotificationService-1.pem"},
    {"SigningCertURL": "https://sns.us-east-1.amazonaws.com/?Action=ListTopics"},
])
def test_unacceptable_messages_are_forbidden_before_any_fetch(change: dict[str, str]) -> None:
    cache, fetched = _cache_serving(signing_key().pem)
    message = _parsed({**sign(envelope("x")), **change})

    with pytest.raises(Forbidden):
        sns.verify(message, topic_arns=(TOPIC,), trusted_hosts=AWS_HOSTS, cache=cache)
    assert fetched == []


def test_an_expired_certificate_is_forbidden() -> None:
    expired = signing_key(expired=True)
    cache, _ = _cache_serving(expired.pem)

    with pytest.raises(Forbidden):
        sns.verify(_parsed(sign(envelope("x"), key=expired)), topic_arns=(),
                   trusted_hosts=AWS_HOSTS, cache=cache)


def test_a_body_that_is_not_a_certificate_is_forbidden_and_not_kept() -> None:
    cache, fetched = _cache_serving(b"<html>captive portal</html>")
    message = _parsed(sign(envelope("x")))

    for _ in range(2):
        with pytest.raises(Forbidden):
            sns.verify(message, topic_arns=(), trusted_hosts=AWS_HOSTS, cache=cache)
    assert fetched == [CERT_URL, CERT_URL]


def test_an_unreachable_certificate_is_a_retryable_failure() -> None:
    def unreachable(url: str) -> bytes:
        raise OSError("connection refused")

    with pytest.raises(ServiceUnavailable):
        sns.verify(_parsed(sign(envelope("x"))), topic_arns=(), trusted_hosts=AWS_HOSTS,
                   cache=sns.CertificateCache(fetch=unreachable))


def test_accepting_any_topic_is_logged_once_per_topic(caplog: pytest.LogCaptureFixture) -> None:
    cache, _ = _cache_serving(signing_key().pem)
    topic = "arn:aws:sns:eu-west-1:123456789012:logged-once"

    for message_id in ("first", "second"):
        sns.verify(_parsed(sign(envelope("x", message_id=message_id, topic=topic))),
                   topic_arns=(), trusted_hosts=AWS_HOSTS, cache=cache)

    warnings = [r for r in caplog.records if "sns_topic_unrestricted" in r.getMessage()]
    assert len(warnings) == 1 and topic in warnings[0].getMessage()
