"""The vGPUs a node offers in one virtualization mode, and who holds them (a registry by mode name).

Three kinds of inventory (DESIGN §7, facts §1-§3):
- `SlotInventory`: a fixed set of vGPU slots, built when the mode is applied: whole cards
  (`default`), MIG slices in legal placements (`mig`), `virtualization_num` fake devices per
  card (`cambricon-env-share`);
- `HamiInventory`: HAMi-Core carves a vGPU per request (memory MiB, cores %) on the card its
  binpack/spread score picks, within `device_split_count` per card;
- `CarvedInventory`: Backend.AI fractional shares (units of 0.01 fGPU) or Cambricon dynamic sMLU
  (vmemory units, vcore %) carved per request on the fullest (binpack) or emptiest card.
`INVENTORIES[mode](cards, cfg, ...)` builds the inventory of a mode. Invariants: slots are held by
at most one worker; carved usage equals the sum of live allocations; `free(worker)` returns all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_UP, Decimal
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from cluster.hardware.accelerator import MockDevice, PluginConfig, device_share, share_to_spec
from cluster.hardware.catalog import GpuSpec, default_catalog
from cluster.hardware.mig import MigPlacement, place_or_raise
from cluster.hardware.virtualization import (
    MIB,
    CambriconDynamicSmluMode,
    CambriconEnvShareMode,
    HamiCard,
    HamiCoreMode,
    MigMode,
    VGpu,
    VirtualizationConfig,
    VirtualizationError,
    hami_pick_card,
)

Policy = Literal["binpack", "spread"]
NextId = Callable[[int, str], str]
"""A fresh vGPU id on a card: (card index, kind) -> id."""


@dataclass(frozen=True, slots=True)
class Card:
    index: int
    uuid: str
    numa: int
    gpu: GpuSpec


class VGpuRequest(BaseModel):
    """What a worker needs from one vGPU: a MIG profile, or minimum memory and SM fraction."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    profile: str | None = None
    memory_bytes: int = Field(default=0, ge=0)
    sm_fraction: float = Field(default=0.0, ge=0.0, le=1.0)


class Inventory(Protocol):
    """One mode's vGPUs on one node."""

    def allocate(self, want: VGpuRequest, worker: str, policy: Policy, exclude: frozenset[int]) -> VGpu | None: ...

    def release(self, vgpu_id: str) -> None: ...

    def free(self, worker: str) -> int: ...

    def held(self) -> list[tuple[VGpu, str | None]]:
        """Every vGPU that exists now and its holder (None = free)."""
        ...

    def max_split(self, card_index: int) -> int: ...

    def free_capacity(self, card_index: int) -> tuple[int, float]: ...


# ------------------------------------------------------------------ fixed slots


@dataclass(slots=True)
class _Slot:
    vgpu: VGpu
    holder: str | None = None
    placement: MigPlacement | None = None


class SlotInventory:
    """Fixed vGPU slots; a request takes the smallest free slot that satisfies it."""

    def __init__(self, slots: list[_Slot]) -> None:
        self._slots = slots

    def allocate(self, want: VGpuRequest, worker: str, policy: Policy, exclude: frozenset[int]) -> VGpu | None:
        free = [s for s in self._slots if s.holder is None and s.vgpu.card_index not in exclude
                and (want.profile is None or s.vgpu.profile == want.profile
                     or (s.placement is not None and want.profile in s.placement.profile.aliases))
                and s.vgpu.memory_bytes >= want.memory_bytes and s.vgpu.sm_fraction >= want.sm_fraction - 1e-9]
        if not free:
            return None
        best = min(free, key=lambda s: (s.vgpu.memory_bytes, s.vgpu.sm_fraction, s.vgpu.card_index))
        best.holder = worker
        return best.vgpu

    def release(self, vgpu_id: str) -> None:
        for s in self._slots:
            if s.vgpu.vgpu_id == vgpu_id:
                s.holder = None

    def free(self, worker: str) -> int:
        n = 0
        for s in self._slots:
            if s.holder == worker:
                s.holder, n = None, n + 1
        return n

    def held(self) -> list[tuple[VGpu, str | None]]:
        return [(s.vgpu, s.holder) for s in self._slots]

    def max_split(self, card_index: int) -> int:
        return sum(1 for s in self._slots if s.vgpu.card_index == card_index)

    def free_capacity(self, card_index: int) -> tuple[int, float]:
        free = [s.vgpu for s in self._slots if s.vgpu.card_index == card_index and s.holder is None]
        return sum(v.memory_bytes for v in free), sum(v.sm_fraction for v in free)


def _whole(node: str, card: Card) -> VGpu:
    return VGpu(f"{node}/{card.index}", node, card.index, card.gpu, card.gpu.memory_bytes, 1.0, 1.0, "exclusive")


def _default(node: str, cards: Sequence[Card], cfg: VirtualizationConfig, devices: Sequence[MockDevice],
             plugin: PluginConfig, next_id: NextId) -> Inventory:
    return SlotInventory([_Slot(_whole(node, c)) for c in cards])


def _mig(node: str, cards: Sequence[Card], cfg: VirtualizationConfig, devices: Sequence[MockDevice],
         plugin: PluginConfig, next_id: NextId) -> Inventory:
    assert isinstance(cfg, MigMode)
    slots: list[_Slot] = []
    for card in cards:
        names = cfg.profiles_for(card.index)
        table = default_catalog().mig_table(card.gpu)
        assert table is not None
        if not names:
            slots.append(_Slot(_whole(node, card)))
        for pl in place_or_raise(table, names, f"{node} card {card.index} ({card.gpu.name})"):
            p = pl.profile
            vg = VGpu(f"{node}/{card.index}/mig-{p.name}@{pl.start}", node, card.index, card.gpu, p.memory_bytes,
                      p.sms / table.full_sms, p.size / table.memory_slices, "mig", profile=p.name)
            slots.append(_Slot(vg, None, pl))
    return SlotInventory(slots)


def _env_share(node: str, cards: Sequence[Card], cfg: VirtualizationConfig, devices: Sequence[MockDevice],
               plugin: PluginConfig, next_id: NextId) -> Inventory:
    assert isinstance(cfg, CambriconEnvShareMode)
    n = cfg.virtualization_num
    return SlotInventory([
        _Slot(VGpu(f"{node}/{c.index}/share{k}", node, c.index, c.gpu, c.gpu.memory_bytes // n, 1.0, 1.0,
                   "time-sliced"))
        for c in cards for k in range(n)])


# ------------------------------------------------------------------ carved per request


@dataclass(slots=True)
class _Carved:
    """A vGPU carved on demand: the amounts to give back on free."""

    vgpu: VGpu
    holder: str
    mem_units: int
    core_units: int


class HamiInventory:
    """HAMi-Core shares: per card, at most `device_split_count` vGPUs within scaled memory and cores."""

    def __init__(self, node: str, cards: Sequence[Card], cfg: HamiCoreMode, next_id: NextId) -> None:
        self._node = node
        self._gpus = {c.index: c.gpu for c in cards}
        self._cfg = cfg
        self._hami = [HamiCard.register(c.index, c.numa, c.gpu.memory_bytes, cfg) for c in cards]
        self._carved: list[_Carved] = []
        self._next_id = next_id

    def allocate(self, want: VGpuRequest, worker: str, policy: Policy, exclude: frozenset[int]) -> VGpu | None:
        mem = math.ceil(want.memory_bytes / MIB)
        cores = math.ceil(want.sm_fraction * 100 - 1e-9)
        card = hami_pick_card([c for c in self._hami if c.index not in exclude], mem, cores,
                              self._cfg.gpu_scheduler_policy)
        if card is None:
            return None
        card.add(mem, cores)
        limit = cores / 100 if 0 < cores < 100 else 1.0
        vg = VGpu(self._next_id(card.index, "hami"), self._node, card.index, self._gpus[card.index], mem * MIB,
                  1.0, 1.0, "time-sliced", limit, self._cfg.core_policy != "force")
        self._carved.append(_Carved(vg, worker, mem, cores))
        return vg

    def _give_back(self, keep: Callable[[_Carved], bool]) -> int:
        kept, n = [], 0
        for d in self._carved:
            if keep(d):
                kept.append(d)
            else:
                self._hami[d.vgpu.card_index].remove(d.mem_units, d.core_units)
                n += 1
        self._carved = kept
        return n

    def release(self, vgpu_id: str) -> None:
        self._give_back(lambda d: d.vgpu.vgpu_id != vgpu_id)

    def free(self, worker: str) -> int:
        return self._give_back(lambda d: d.holder != worker)

    def held(self) -> list[tuple[VGpu, str | None]]:
        return [(d.vgpu, d.holder) for d in self._carved]

    def max_split(self, card_index: int) -> int:
        return self._cfg.device_split_count

    def free_capacity(self, card_index: int) -> tuple[int, float]:
        h = self._hami[card_index]
        return (h.devmem_mib - h.usedmem_mib) * MIB, (h.devcore - h.usedcores) / 100


class CarvedInventory:
    """Fractional fGPU shares (`kind` "frac") or Cambricon dynamic sMLU (`kind` "smlu") per card."""

    def __init__(self, node: str, cards: Sequence[Card], kind: Literal["frac", "smlu"],
                 capacity: dict[int, tuple[int, int]], plugin: PluginConfig, smlu_unit_mib: dict[int, int],
                 next_id: NextId) -> None:
        self._node = node
        self._cards = list(cards)
        self._kind = kind
        self._cap = capacity
        """card -> (memory units, core units) capacity."""
        self._plugin = plugin
        self._unit_mib = smlu_unit_mib
        self._carved: list[_Carved] = []
        self._next_id = next_id

    def _need(self, want: VGpuRequest, card: Card) -> tuple[int, int]:
        """(memory units, core units) a request takes on a card."""
        if self._kind == "frac":
            cfg = self._plugin
            share = max(Decimal(want.memory_bytes) / cfg.unit_mem,
                        Decimal(want.sm_fraction * card.gpu.sms) / cfg.unit_proc, cfg.quantum_size)
            share = (share / cfg.quantum_size).to_integral_value(rounding=ROUND_UP) * cfg.quantum_size
            return int(share * 100), 0
        need = max(1, math.ceil(want.memory_bytes / MIB / self._unit_mib[card.index]))
        return need, max(1, math.ceil(want.sm_fraction * 100 - 1e-9))

    def _used(self, card_index: int) -> tuple[int, int]:
        mine = [d for d in self._carved if d.vgpu.card_index == card_index]
        return sum(d.mem_units for d in mine), sum(d.core_units for d in mine)

    def allocate(self, want: VGpuRequest, worker: str, policy: Policy, exclude: frozenset[int]) -> VGpu | None:
        fits: list[tuple[int, int, int]] = []  # (free units, card, need)
        for card in self._cards:
            if card.index in exclude:
                continue
            cap_mem, cap_core = self._cap[card.index]
            used_m, used_c = self._used(card.index)
            need, need_c = self._need(want, card)
            if cap_mem - used_m >= need and cap_core - used_c >= need_c:
                fits.append((cap_mem - used_m, card.index, need))
        if not fits:
            return None
        _, idx, need = min(fits) if policy == "binpack" else max(fits, key=lambda f: (f[0], -f[1]))
        card = self._cards[idx]
        if self._kind == "frac":
            mem, procs = share_to_spec(Decimal(need) / 100, self._plugin)
            vg = VGpu(self._next_id(idx, "frac"), self._node, idx, card.gpu, mem, 1.0, 1.0, "time-sliced",
                      min(1.0, procs / card.gpu.sms), False)
            self._carved.append(_Carved(vg, worker, need, 0))
        else:
            vcore = max(1, math.ceil(want.sm_fraction * 100 - 1e-9))
            vg = VGpu(self._next_id(idx, "smlu"), self._node, idx, card.gpu, need * self._unit_mib[idx] * MIB,
                      1.0, 1.0, "time-sliced", vcore / 100, False)
            self._carved.append(_Carved(vg, worker, need, vcore))
        return vg

    def release(self, vgpu_id: str) -> None:
        self._carved = [d for d in self._carved if d.vgpu.vgpu_id != vgpu_id]

    def free(self, worker: str) -> int:
        before = len(self._carved)
        self._carved = [d for d in self._carved if d.holder != worker]
        return before - len(self._carved)

    def held(self) -> list[tuple[VGpu, str | None]]:
        return [(d.vgpu, d.holder) for d in self._carved]

    def max_split(self, card_index: int) -> int:
        cap_mem, cap_core = self._cap[card_index]
        return cap_mem if self._kind == "frac" else min(cap_mem, cap_core)

    def free_capacity(self, card_index: int) -> tuple[int, float]:
        gpu = self._cards[card_index].gpu
        held = [d for d in self._carved if d.vgpu.card_index == card_index]
        used_mem = sum(d.vgpu.memory_bytes for d in held)
        used_sm = sum(d.vgpu.core_limit for d in held)
        return max(0, gpu.memory_bytes - used_mem), max(0.0, 1.0 - used_sm)


def _hami(node: str, cards: Sequence[Card], cfg: VirtualizationConfig, devices: Sequence[MockDevice],
          plugin: PluginConfig, next_id: NextId) -> Inventory:
    assert isinstance(cfg, HamiCoreMode)
    return HamiInventory(node, cards, cfg, next_id)


def _fractional(node: str, cards: Sequence[Card], cfg: VirtualizationConfig, devices: Sequence[MockDevice],
                plugin: PluginConfig, next_id: NextId) -> Inventory:
    cap = {}
    for card in cards:
        if card.index >= len(devices):
            raise VirtualizationError(f"card {card.index} is listed as MIG slices; fractional shares need whole "
                                      "devices")
        cap[card.index] = (int(device_share(devices[card.index], plugin) * 100), 0)
    return CarvedInventory(node, cards, "frac", cap, plugin, {}, next_id)


def _smlu(node: str, cards: Sequence[Card], cfg: VirtualizationConfig, devices: Sequence[MockDevice],
          plugin: PluginConfig, next_id: NextId) -> Inventory:
    assert isinstance(cfg, CambriconDynamicSmluMode)
    units = {c.index: cfg.min_dsmlu_unit_mib or max(1, c.gpu.memory_bytes // MIB // 100) for c in cards}
    cap = {c.index: (c.gpu.memory_bytes // MIB // units[c.index], 100) for c in cards}
    return CarvedInventory(node, cards, "smlu", cap, plugin, units, next_id)


InventoryFactory = Callable[[str, Sequence[Card], VirtualizationConfig, Sequence[MockDevice], PluginConfig, NextId],
                            Inventory]

INVENTORIES: dict[str, InventoryFactory] = {
    "default": _default,
    "mig": _mig,
    "cambricon-env-share": _env_share,
    "hami-core": _hami,
    "fractional": _fractional,
    "cambricon-dynamic-smlu": _smlu,
}
"""Virtualization mode name -> (node, cards, cfg, whole devices, plugin config, next id) -> inventory."""


class EmptyInventory:
    """No vGPUs (a node switching modes, or whose switch failed)."""

    def allocate(self, want: VGpuRequest, worker: str, policy: Policy, exclude: frozenset[int]) -> VGpu | None:
        return None

    def release(self, vgpu_id: str) -> None:
        pass

    def free(self, worker: str) -> int:
        return 0

    def held(self) -> list[tuple[VGpu, str | None]]:
        return []

    def max_split(self, card_index: int) -> int:
        return 0

    def free_capacity(self, card_index: int) -> tuple[int, float]:
        return 0, 0.0
