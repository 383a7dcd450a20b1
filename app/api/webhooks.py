"""Delivery feedback webhooks: Amazon SES through SNS."""

from __future__ import annotations
