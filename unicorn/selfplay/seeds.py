"""Seeds derived from names, never from a rank or a worker count: the same prompt id gets the same seeds however
the work is split."""
from __future__ import annotations

import hashlib
import random


def derive_seed(run_seed: int, *parts) -> int:
    """A 62-bit seed from the run seed and a path of names/ints, e.g. ``derive_seed(s, "image", prompt_id, 3)``."""
    key = ":".join(str(p) for p in (run_seed, *parts)).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 2


def derive_rng(run_seed: int, *parts) -> random.Random:
    return random.Random(derive_seed(run_seed, *parts))
