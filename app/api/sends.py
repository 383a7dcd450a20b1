"""Transactional sends (contract §6): POST /send, GET /sends, GET /sends/:id."""

from __future__ import annotations
