"""Sequence definitions and the engine that runs them: pure, strictly typed, no I/O.

Nothing here imports Flask, Celery or the database; the app feeds it data and acts on its
decisions. For now it holds the duration grammar the delay steps use.
"""

from sequences.durations import parse_duration

__all__ = ["parse_duration"]
