"""Templates (contract §6): upsert, list, get, delete, preview."""

from __future__ import annotations
