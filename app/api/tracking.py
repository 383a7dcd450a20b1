"""Public tracking endpoints: open pixel, click redirect, unsubscribe pages."""

from __future__ import annotations
