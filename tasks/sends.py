"""Celery entrypoints for sending e-mail."""

from __future__ import annotations
