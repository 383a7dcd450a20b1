"""A small Server-Sent Events client for tests, over real HTTP (requests, streamed)."""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import requests


@dataclass
class Message:
    id: str | None
    data: Any
    comments: list[str] = field(default_factory=list)


class SSEStream:
    """Reads a stream on a thread; messages and comments arrive on queues, in order."""

    def __init__(self, url: str, *, headers: dict[str, str] | None = None,
                 params: dict[str, str] | None = None) -> None:
        self.response = requests.get(url, headers=headers, params=params, stream=True,
                                     timeout=(5, 30))
        self.messages: queue.Queue[Message] = queue.Queue()
        self.comments: queue.Queue[str] = queue.Queue()
        self.retry: int | None = None
        self.finished = threading.Event()
        if self.response.status_code == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = ""
        try:
            for chunk in self.response.iter_content(chunk_size=None, decode_unicode=True):
                buffer += chunk
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    self._dispatch(block)
        except (requests.RequestException, AttributeError, ValueError):
            pass  # closed by the test
        finally:
            self.finished.set()

    def _dispatch(self, block: str) -> None:
        event_id, data = None, []
        for line in block.split("\n"):
            if line.startswith(":"):
                self.comments.put(line[1:].strip())
            elif line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line.startswith("retry:"):
                self.retry = int(line[6:].strip())
        if data:
            self.messages.put(Message(event_id, json.loads("\n".join(data))))

    def take(self, count: int, *, timeout: float = 15.0) -> list[Message]:
        """The next `count` messages (fails the test if they do not come in time)."""
        taken = []
        for _ in range(count):
            try:
                taken.append(self.messages.get(timeout=timeout))
            except queue.Empty:
                raise AssertionError(f"got {len(taken)} of {count} messages: {taken}") from None
        return taken

    def nothing_more(self, wait: float = 1.0) -> bool:
        try:
            extra = self.messages.get(timeout=wait)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected message {extra}")

    def close(self) -> None:
        self.response.close()
