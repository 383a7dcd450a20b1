"""Contacts API (contract §4)."""

from __future__ import annotations
