"""Seeded per-component randomness (DESIGN §3).
"""

from __future__ import annotations

import hashlib

import numpy as np


def component_rng(seed: int, name: str) -> np.random.Generator:
    """A generator for one component, stable under adding or removing other components."""
    digest = hashlib.sha256(name.encode()).digest()
    key = int.from_bytes(digest[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([seed, key]))
