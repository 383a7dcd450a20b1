"""Amazon SNS over HTTP: parse a message, verify its signature, confirm a subscription.

SNS signs every message with a certificate it serves from `sns.<region>.amazonaws.com`. A message
is trusted when its certificate URL is on a trusted host (checked before anything is fetched), the
certificate's key verifies the signature over the canonical string, and its topic is on the
allow-list. The allow-list matters: anyone's own topic produces validly signed messages.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import urllib.request
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from app.errors import BadRequest
from app.errors import Forbidden
from app.errors import ServiceUnavailable
from app.timeutil import utcnow

log = logging.getLogger(__name__)

# The fields each message type signs, in the order SNS concatenates them ("Key\nValue\n").
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                                 "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                                "TopicArn", "Type"),
}
_REQUIRED_FIELDS = ("SignatureVersion", "Signature", "SigningCertURL")
_OPTIONAL_FIELDS = frozenset({"Subject"})
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
_LABEL = re.compile(r"[a-z0-9-]+")
FETCH_TIMEOUT_S = 5.0
MAX_FETCH_BYTES = 64 * 1024


@dataclass(frozen=True)
class SnsMessage:
    """A well-formed SNS message (not yet verified): its type and every field as received."""

    type: str
    fields: dict[str, str]

    @property
    def message_id(self) -> str:
        return self.fields["MessageId"]

    @property
    def topic_arn(self) -> str:
        return self.fields["TopicArn"]

    @property
    def message(self) -> str:
        return self.fields["Message"]


def parse_message(body: bytes, *, type_header: str | None = None) -> SnsMessage:
    """Read an SNS message (JSON whatever the Content-Type says); 400 if it is malformed."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise BadRequest("The body must be a JSON object.")
    kind = data.get("Type")
    if kind not in _SIGNED_FIELDS:
        raise BadRequest("Type: not an SNS message type.",
                         details={"Type": [f"Must be one of {', '.join(_SIGNED_FIELDS)}."]})
    if type_header is not None and type_header != kind:
        raise BadRequest("The x-amz-sns-message-type header does not match the body's Type.")
    expected = (*_SIGNED_FIELDS[kind], *_REQUIRED_FIELDS)
    problems = {name: ["Missing or not a string."] for name in expected
                if not isinstance(data.get(name), str)
                and not (name in _OPTIONAL_FIELDS and data.get(name) is None)}
    if problems:
        raise BadRequest(f"{next(iter(problems))}: missing or not a string.", details=problems)
    fields = {name: data[name] for name in expected if isinstance(data.get(name), str)}
    return SnsMessage(type=kind, fields=fields)


def signing_string(message: SnsMessage) -> bytes:
    """The canonical string SNS signs: `Key\\nValue\\n` for each signed field that is present."""
    return "".join(f"{name}\n{message.fields[name]}\n" for name in _SIGNED_FIELDS[message.type]
                   if name in message.fields).encode()


def _host_matches(host: str, pattern: str) -> bool:
    labels, wanted = host.split("."), pattern.lower().split(".")
    return len(labels) == len(wanted) and all(
        _LABEL.fullmatch(label) if want == "*" else label == want
        for label, want in zip(labels, wanted, strict=True))


def trusted_url(url: str, trusted_hosts: Iterable[str]) -> bool:
    """Whether `url` is on a trusted host: https on a matching host pattern, or an exact origin.

    A pattern such as `sns.*.amazonaws.com` allows https on port 443 only; an entry written as an
    origin (`http://127.0.0.1:8025`) allows exactly that scheme, host and port (local setups).
    """
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return False
    host = parts.hostname or ""
    if parts.username is not None or parts.password is not None or not host:
        return False
    for entry in trusted_hosts:
        if "://" in entry:
            origin = urlsplit(entry)
            if (parts.scheme, host, port) == (origin.scheme, origin.hostname, origin.port):
                return True
        elif parts.scheme == "https" and port in (None, 443) and _host_matches(host, entry):
            return True
    return False


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect could leave the trusted host; treat it as a failed fetch instead.
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def fetch_url(url: str) -> bytes:
    """GET a trusted URL (checked by the caller), without redirects, bounded in time and size."""
    opener = urllib.request.build_opener(_NoRedirects)
    with opener.open(url, timeout=FETCH_TIMEOUT_S) as response:
        body: bytes = response.read(MAX_FETCH_BYTES + 1)
    if len(body) > MAX_FETCH_BYTES:
        raise ValueError(f"{url} answered more than {MAX_FETCH_BYTES} bytes")
    return body


class CertificateCache:
    """Signing certificates by URL, each fetched once per process (SNS rotates them by URL)."""

    def __init__(self, fetch: Callable[[str], bytes] = fetch_url, max_entries: int = 64) -> None:
        self._fetch = fetch
        self._max_entries = max_entries
        self._certificates: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

    def add(self, url: str, pem: bytes) -> x509.Certificate:
        """Load a PEM certificate and remember it for `url`; 403 if it is not one."""
        try:
            certificate = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise Forbidden("The signing certificate could not be read.") from None
        with self._lock:
            if len(self._certificates) >= self._max_entries:
                self._certificates.pop(next(iter(self._certificates)))
            self._certificates[url] = certificate
        return certificate

    def get(self, url: str) -> x509.Certificate:
        """The certificate at `url`, fetched on first use; 503 if it cannot be fetched now."""
        with self._lock:
            cached = self._certificates.get(url)
        if cached is not None:
            return cached
        try:
            pem = self._fetch(url)
        except (OSError, ValueError) as error:
            log.warning("sns_certificate_fetch_failed url=%s error=%s", url, error)
            # 5xx makes SNS retry later, which is right for a network hiccup.
            raise ServiceUnavailable("The signing certificate could not be fetched.") from None
        return self.add(url, pem)

    def clear(self) -> None:
        """Forget every certificate."""
        with self._lock:
            self._certificates.clear()


certificates = CertificateCache()
_warned_topics: set[str] = set()


def _warn_unrestricted(topic_arn: str) -> None:
    # Once per topic and process; called only for verified messages, so the set stays small.
    if topic_arn not in _warned_topics:
        _warned_topics.add(topic_arn)
        log.warning("sns_topic_unrestricted topic=%s (set SES_SNS_TOPIC_ARNS to accept only "
                    "your topics)", topic_arn)


def _public_key(certificate: x509.Certificate) -> RSAPublicKey:
    now = utcnow()
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise Forbidden("The signing certificate is not valid now.")
    key = certificate.public_key()
    if not isinstance(key, RSAPublicKey):
        raise Forbidden("The signing certificate does not hold an RSA key.")
    return key


def verify(message: SnsMessage, *, topic_arns: tuple[str, ...], trusted_hosts: tuple[str, ...],
           cache: CertificateCache | None = None) -> None:
    """Check the topic, the certificate's host and the signature; 403 on any failure."""
    if topic_arns and message.topic_arn not in topic_arns:
        log.warning("sns_topic_rejected topic=%s", message.topic_arn)
        raise Forbidden("This SNS topic is not accepted.")
    cert_url = message.fields["SigningCertURL"]
    # SNS certificates are .pem files; anything else is not worth a request to the host.
    if not (trusted_url(cert_url, trusted_hosts) and urlsplit(cert_url).path.endswith(".pem")):
        log.warning("sns_certificate_url_rejected url=%s", cert_url)
        raise Forbidden("The signing certificate URL is not on a trusted SNS host.")
    algorithm = _HASHES.get(message.fields["SignatureVersion"])
    if algorithm is None:
        raise Forbidden("Unsupported SignatureVersion.")
    try:
        signature = base64.b64decode(message.fields["Signature"], validate=True)
    except binascii.Error:
        raise Forbidden("The signature is not valid base64.") from None
    key = _public_key((cache or certificates).get(cert_url))
    try:
        key.verify(signature, signing_string(message), PKCS1v15(), algorithm())
    except InvalidSignature:
        log.warning("sns_signature_invalid message_id=%s", message.message_id)
        raise Forbidden("The message signature does not verify.") from None
    if not topic_arns:
        _warn_unrestricted(message.topic_arn)


def confirm_subscription(message: SnsMessage, *, trusted_hosts: tuple[str, ...],
                         fetch: Callable[[str], bytes] = fetch_url) -> None:
    """Confirm a verified subscription by visiting its SubscribeURL (same SNS host as the cert)."""
    url = message.fields["SubscribeURL"]
    link, cert = urlsplit(url), urlsplit(message.fields["SigningCertURL"])
    same_origin = (link.scheme, link.netloc) == (cert.scheme, cert.netloc)
    if not (same_origin and trusted_url(url, trusted_hosts)):
        log.warning("sns_subscribe_url_rejected url=%s", url)
        raise Forbidden("The SubscribeURL is not on the SNS host that signed the message.")
    try:
        fetch(url)
    except (OSError, ValueError) as error:
        log.warning("sns_subscription_confirm_failed topic=%s error=%s", message.topic_arn, error)
        message_text = "The subscription could not be confirmed; SNS will retry."
        raise ServiceUnavailable(message_text) from None
    log.info("sns_subscription_confirmed topic=%s", message.topic_arn)
