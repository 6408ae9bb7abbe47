"""Seeded per-component randomness (DESIGN §3): the one seed scheme of a run.

Every component that draws (the router's tie-breaks, each lossy event-plane link, later the
planner) gets its own `SeedSequence`, derived from the run's seed and the component's stable
name: `SeedSequence(sha256("<seed>/<name>")[:8] >> 1)`. So a component's stream never depends
on which other components exist or in which order they were built, and the same scenario and
seed give the same draws on every runtime. Workload generators keep their own seed
(`workload.synthetic.seed`, the reference's arrival seed).
"""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(seed: int, name: str) -> int:
    """The integer seed of component `name` in a run seeded with `seed` (a non-negative int63)."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def component_seed(seed: int, name: str) -> np.random.SeedSequence:
    """The seed sequence of component `name` (feed it to `numpy.random.default_rng`)."""
    return np.random.SeedSequence(derive_seed(seed, name))


def component_rng(seed: int, name: str) -> np.random.Generator:
    """A generator for one component, stable under adding or removing other components."""
    return np.random.default_rng(component_seed(seed, name))
