"""Settings from the environment: what the contract requires of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import Settings


def test_secret_key_is_required_outside_embedded_mode(tmp_path: Path) -> None:
    data = {"KRAITER_DATA_DIR": str(tmp_path)}
    for services in ({"DATABASE_URL": "postgres://u@db.example:5432/kraiter"},
                     {"REDIS_URL": "redis://redis.example:6379/0"}):
        with pytest.raises(SystemExit, match="SECRET_KEY must be set"):
            Settings.from_env({**data, **services})
        keyed = Settings.from_env({**data, **services, "SECRET_KEY": "k2,k1"})
        assert keyed.secret_keys == ("k2", "k1")


def test_embedded_mode_keeps_a_generated_key_across_restarts(tmp_path: Path) -> None:
    first = Settings.from_env({"KRAITER_DATA_DIR": str(tmp_path)})
    again = Settings.from_env({"KRAITER_DATA_DIR": str(tmp_path)})
    assert first.secret_keys == again.secret_keys and len(first.secret_keys[0]) >= 32
    assert first.database_url.startswith("sqlite")
