"""MIG placement: which sets of GPU-instance profiles fit on one card, and where (facts §1.3).

Rules (HAMi `canPlaceMigProfiles`, NVML placements):
- each instance takes one legal half-open interval `[start, start+size)` on the memory-slice line, and
  intervals never overlap;
- at most one `+me` (media extension) instance per GPU;
- compute slices of all instances sum to at most the table's compute slices.
The search is backtracking; instances with the fewest legal placements go first, larger size first.
Starts are tried highest-first for 1g.* and 3g.* profiles, lowest-first otherwise (HAMi's preference,
which keeps low slots free for 4g/7g).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from cluster.hardware.catalog import MigProfile, MigTable


@dataclass(frozen=True, slots=True)
class MigPlacement:
    """One placed GPU instance."""

    profile: MigProfile
    start: int

    @property
    def end(self) -> int:
        return self.start + self.profile.size


class MigError(ValueError):
    """A profile the GPU lacks or a set that does not fit."""


def _prefers_high(profile: MigProfile) -> bool:
    return profile.name.startswith("1g.") or profile.name.startswith("3g.")


def resolve_profiles(table: MigTable, names: Sequence[str], gpu_name: str) -> list[MigProfile]:
    """Profiles for `names`; refuses a name the table lacks, naming the legal ones."""
    out = []
    for name in names:
        prof = table.profile(name)
        if prof is None:
            raise MigError(f"{gpu_name} has no MIG profile {name!r}; it offers: {', '.join(table.names())}")
        out.append(prof)
    return out


def try_place(table: MigTable, profiles: Sequence[MigProfile],
              occupied: Sequence[MigPlacement] = ()) -> list[MigPlacement] | None:
    """Placements for `profiles` (in input order) next to `occupied`, or None when the set cannot fit."""
    if sum(p.compute for p in profiles) + sum(o.profile.compute for o in occupied) > table.compute_slices:
        return None
    if sum(p.media_ext for p in profiles) + sum(o.profile.media_ext for o in occupied) > 1:
        return None
    order = sorted(range(len(profiles)), key=lambda i: (len(profiles[i].starts), -profiles[i].size, i))
    used = [False] * table.memory_slices
    for o in occupied:
        for s in range(o.start, o.end):
            used[s] = True
    chosen: dict[int, int] = {}

    def place(k: int) -> bool:
        if k == len(order):
            return True
        idx = order[k]
        prof = profiles[idx]
        starts = sorted(prof.starts, reverse=_prefers_high(prof))
        for start in starts:
            span = range(start, start + prof.size)
            if any(used[s] for s in span):
                continue
            for s in span:
                used[s] = True
            chosen[idx] = start
            if place(k + 1):
                return True
            for s in span:
                used[s] = False
            del chosen[idx]
        return False

    if not place(0):
        return None
    return [MigPlacement(profiles[i], chosen[i]) for i in range(len(profiles))]


def place_or_raise(table: MigTable, names: Sequence[str], gpu_name: str,
                   occupied: Sequence[MigPlacement] = ()) -> list[MigPlacement]:
    """`try_place` on profile names, raising `MigError` with the reason when it fails."""
    profiles = resolve_profiles(table, names, gpu_name)
    result = try_place(table, profiles, occupied)
    if result is None:
        total_c = sum(p.compute for p in profiles) + sum(o.profile.compute for o in occupied)
        total_m = sum(p.size for p in profiles) + sum(o.profile.size for o in occupied)
        raise MigError(
            f"MIG set [{', '.join(names)}] does not fit on {gpu_name}: needs {total_c}/{table.compute_slices} "
            f"compute and {total_m}/{table.memory_slices} memory slices, or its legal placements overlap"
        )
    return result


def max_instances(table: MigTable, profile: MigProfile) -> int:
    """The largest number of copies of `profile` that fit on one empty card."""
    n = 0
    while try_place(table, [profile] * (n + 1)) is not None:
        n += 1
    return n
