"""Benchmarks: `python bench/ingest.py` and `python bench/list_events.py` (see bench/README.md)."""
