"""The `console` transport: each message printed to standard output (development)."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from app.transports.message import OutgoingMessage


class ConsoleTransport:
    """Writes each message, as it would go over the wire, between two separator lines."""

    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def send(self, message: OutgoingMessage) -> str | None:
        text = message.data.decode("utf-8", "replace").replace("\r\n", "\n")
        stream = self.stream or sys.stdout
        with self._lock:  # one message at a time, so threads never interleave their lines
            stream.write(f"{'-' * 72}\n{text.rstrip()}\n{'-' * 72}\n")
            stream.flush()
        return None

    def close(self) -> None:
        return None
