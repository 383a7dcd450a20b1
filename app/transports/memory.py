"""The `memory` transport: messages kept in a list of this process (unit tests)."""

from __future__ import annotations

import threading

from app.transports.message import OutgoingMessage

# Shared by every MemoryTransport of the process, so a test can read what any code path sent.
outbox: list[OutgoingMessage] = []
_lock = threading.Lock()


class MemoryTransport:
    """Appends each message to `outbox`."""

    name = "memory"

    def send(self, message: OutgoingMessage) -> str | None:
        with _lock:
            outbox.append(message)
        return None

    def close(self) -> None:
        return None


def clear() -> None:
    """Forget every message sent so far."""
    with _lock:
        outbox.clear()
