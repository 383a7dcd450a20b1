"""The `file` transport: one `.eml` file per message in the outbox folder (embedded default)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from app.transports import FatalError
from app.transports import TransientError
from app.transports.message import OutgoingMessage


class FileTransport:
    """Writes `<outbox>/<send id>.eml`; a reader never sees a half-written file."""

    name = "file"

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox

    def send(self, message: OutgoingMessage) -> str | None:
        name = message.send_id or uuid.uuid4().hex
        if not name.replace("_", "").isalnum():  # the send id becomes a file name
            raise FatalError(None, f"send id {name!r} is not a safe file name.")
        payload = message.data
        final = self.outbox / f"{name}.eml"
        partial = self.outbox / f".{name}.{uuid.uuid4().hex}.tmp"
        try:
            self.outbox.mkdir(parents=True, exist_ok=True)
            with partial.open("wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            # rename is atomic: the .eml appears whole or not at all, even if the worker dies.
            os.replace(partial, final)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise TransientError(None, f"could not write {final}: {error}") from error
        return None

    def close(self) -> None:
        return None
