"""Server-made ids: `<prefix>_<ULID>` in Crockford's base32, sorting by creation time."""

from __future__ import annotations

import os
import random

from app.ids import _ulid
from app.ids import new_id

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _reference_ulid(ms: int, randomness: bytes) -> str:
    """The ULID spec's encoding, spelled out: 26 five-bit digits, most significant first."""
    value = (ms << 80) | int.from_bytes(randomness, "big")
    return "".join(_CROCKFORD[(value >> (5 * (25 - i))) & 31] for i in range(26))


def test_the_encoding_is_the_ulid_spec_for_any_time_and_randomness() -> None:
    rng = random.Random(7)
    cases = [(0, bytes(10)), (2**48 - 1, b"\xff" * 10), (1_700_000_000_000, bytes(10))]
    cases += [(rng.randrange(2**48), rng.randbytes(10)) for _ in range(2000)]
    for ms, randomness in cases:
        assert _ulid(ms, randomness) == _reference_ulid(ms, randomness)


def test_ids_carry_their_prefix_and_sort_by_time() -> None:
    earlier, later = new_id("evt", ms=1_700_000_000_000), new_id("evt", ms=1_700_000_000_001)
    assert earlier.startswith("evt_") and len(earlier) == 4 + 26
    assert earlier < later
    assert _reference_ulid(1_700_000_000_000, bytes(10))[:10] == earlier[4:14]


def test_ids_do_not_repeat_across_refills_of_the_random_pool() -> None:
    ids = [new_id("evt", ms=1_700_000_000_000) for _ in range(2000)]  # several pools' worth
    assert len(set(ids)) == len(ids)


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    new_id("evt")  # the parent has fetched random bytes it has not used yet
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write_end, new_id("evt", ms=1_700_000_000_000).encode())
        os._exit(0)
    os.waitpid(child, 0)
    from_child = os.read(read_end, 100).decode()
    os.close(read_end)
    os.close(write_end)

    assert from_child.startswith("evt_")
    assert from_child != new_id("evt", ms=1_700_000_000_000)
