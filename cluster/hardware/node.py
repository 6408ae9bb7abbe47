"""A GPU node: physical cards from an accelerator file, a node-wide virtualization mode, vGPUs and hosted
workers, and mode switching as a timed state machine (DESIGN §7).

States: `ready` --request_switch--> `draining` (while workers are hosted; the caller drains them and calls
`free`) --> `switching` (for `switch_ms` of simulated time) --> `ready` in the new mode, or `switch-failed`
(injectable) which offers no vGPUs until a later switch succeeds. A refused mode (vendor/mode pair, MIG set)
raises before any state changes. Time is given by the caller (`now_ms`); the node reads no clock.

Invariants: a worker holds vGPUs on this node only through `allocate`; `free(worker)` returns all of them;
MIG slices never overlap; HAMi/fractional/sMLU usage equals the sum of live allocations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_UP, Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from cluster.hardware.accelerator import (
    AcceleratorFile,
    MockDevice,
    device_share,
    load_accelerator,
    read_toml,
    share_to_spec,
)
from cluster.hardware.catalog import Catalog, GpuSpec, default_catalog, summarize_validation_error
from cluster.hardware.mig import MigPlacement, place_or_raise
from cluster.hardware.virtualization import (
    MIB,
    HamiCard,
    HamiCoreMode,
    VGpu,
    VirtualizationConfig,
    VirtualizationError,
    check_supported,
    hami_pick_card,
)

NodeStatus = Literal["ready", "draining", "switching", "switch-failed"]
_VIRT_ADAPTER: TypeAdapter[VirtualizationConfig] = TypeAdapter(VirtualizationConfig)


class VGpuRequest(BaseModel):
    """What a worker needs from one vGPU: a MIG profile, or minimum memory and SM fraction."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    profile: str | None = None
    memory_bytes: int = Field(default=0, ge=0)
    sm_fraction: float = Field(default=0.0, ge=0.0, le=1.0)


@dataclass(frozen=True, slots=True)
class Card:
    index: int
    uuid: str
    numa: int
    gpu: GpuSpec


@dataclass(slots=True)
class _Slot:
    """A fixed vGPU slot (MIG slice, whole card, env-share device) and its holder."""

    vgpu: VGpu
    holder: str | None = None
    placement: MigPlacement | None = None


@dataclass(slots=True)
class _Dynamic:
    """A vGPU carved on demand (HAMi, fractional, sMLU): the amounts to give back on free."""

    vgpu: VGpu
    holder: str
    mem_units: int
    core_units: int


@dataclass(slots=True)
class _Pending:
    cfg: VirtualizationConfig
    switch_ms: float
    fail: bool
    done_ms: float | None = None


@dataclass
class Node:
    """One node. Build with `Node.build(name, acc, cfg)` or `load_node(path)`."""

    name: str
    acc: AcceleratorFile
    cards: list[Card]
    mode: VirtualizationConfig
    status: NodeStatus = "ready"
    _slots: list[_Slot] = field(default_factory=list)
    _dynamic: list[_Dynamic] = field(default_factory=list)
    _cap: dict[int, tuple[int, int]] = field(default_factory=dict)  # card -> (mem units, core units) capacity
    _hami: list[HamiCard] = field(default_factory=list)
    _pending: _Pending | None = None
    _seq: int = 0

    @classmethod
    def build(cls, name: str, acc: AcceleratorFile, cfg: VirtualizationConfig | None = None,
              catalog: Catalog | None = None) -> "Node":
        cat = catalog or default_catalog()
        cards = _cards_from_file(acc, cat)
        if cfg is None:
            cfg = _VIRT_ADAPTER.validate_python({"mode": "mig", "per_card": _file_mig(acc, cards)} if acc.has_mig
                                                else {"mode": "fractional" if acc.plugin_config.allocation_mode
                                                      == "fractional" else "default"})
        node = cls(name, acc, cards, cfg)
        node._apply(cfg)
        return node

    # ------------------------------------------------------------------ modes
    def _apply(self, cfg: VirtualizationConfig) -> None:
        """Validate `cfg` for these cards and rebuild the vGPU inventory (no workers may be hosted)."""
        check_supported(cfg.mode, [c.gpu for c in self.cards])
        slots: list[_Slot] = []
        cap: dict[int, tuple[int, int]] = {}
        hami: list[HamiCard] = []
        for card in self.cards:
            if cfg.mode == "mig":
                names = cfg.profiles_for(card.index)
                table = default_catalog().mig_table(card.gpu)
                assert table is not None
                if not names:
                    slots.append(_Slot(self._whole(card)))
                for pl in place_or_raise(table, names, f"{self.name} card {card.index} ({card.gpu.name})"):
                    slots.append(_Slot(self._mig_vgpu(card, pl, table.memory_slices, table.full_sms), None, pl))
            elif cfg.mode == "default":
                slots.append(_Slot(self._whole(card)))
            elif cfg.mode == "cambricon-env-share":
                for k in range(cfg.virtualization_num):
                    slots.append(_Slot(VGpu(f"{self.name}/{card.index}/share{k}", self.name, card.index, card.gpu,
                                            card.gpu.memory_bytes // cfg.virtualization_num, 1.0, 1.0,
                                            "time-sliced")))
            elif cfg.mode == "hami-core":
                hami.append(HamiCard.register(card.index, card.numa, card.gpu.memory_bytes, cfg))
            elif cfg.mode == "fractional":
                share = device_share(self._device(card), self.acc.plugin_config)
                cap[card.index] = (int(share * 100), 0)
            else:  # cambricon-dynamic-smlu
                unit = cfg.min_dsmlu_unit_mib or max(1, card.gpu.memory_bytes // MIB // 100)
                cap[card.index] = (card.gpu.memory_bytes // MIB // unit, 100)
        self.mode, self._slots, self._cap, self._hami, self._dynamic = cfg, slots, cap, hami, []

    def _device(self, card: Card) -> MockDevice:
        whole = self.acc.whole_devices
        if card.index >= len(whole):
            raise VirtualizationError(f"card {card.index} is listed as MIG slices; fractional shares need whole devices")
        return whole[card.index]

    def _whole(self, card: Card) -> VGpu:
        return VGpu(f"{self.name}/{card.index}", self.name, card.index, card.gpu, card.gpu.memory_bytes,
                    1.0, 1.0, "exclusive")

    def _mig_vgpu(self, card: Card, pl: MigPlacement, slices: int, full_sms: int) -> VGpu:
        p = pl.profile
        return VGpu(f"{self.name}/{card.index}/mig-{p.name}@{pl.start}", self.name, card.index, card.gpu,
                    p.memory_bytes, p.sms / full_sms, p.size / slices, "mig", profile=p.name)

    def request_switch(self, cfg: VirtualizationConfig, now_ms: float, switch_ms: float = 30_000.0,
                       fail: bool = False) -> list[str]:
        """Start a mode switch; returns the workers that must be drained first (then `free` each).

        Raises:
            VirtualizationError: the mode is refused for this hardware (state unchanged), or a switch is
            already under way.
        """
        if self.status in ("draining", "switching"):
            raise VirtualizationError(f"node {self.name} is already {self.status}")
        check_supported(cfg.mode, [c.gpu for c in self.cards])
        if cfg.mode == "mig":
            for card in self.cards:
                table = default_catalog().mig_table(card.gpu)
                assert table is not None
                place_or_raise(table, cfg.profiles_for(card.index), f"{self.name} card {card.index}")
        self._pending = _Pending(cfg, switch_ms, fail)
        workers = self.workers()
        self.status = "draining"
        if not workers:
            self._start_switch(now_ms)
        return workers

    def _start_switch(self, now_ms: float) -> None:
        assert self._pending is not None
        self.status = "switching"
        self._pending.done_ms = now_ms + self._pending.switch_ms
        self._slots, self._dynamic, self._hami, self._cap = [], [], [], {}

    def next_timer_ms(self) -> float | None:
        """When the switch in progress completes, if one is."""
        return self._pending.done_ms if self._pending is not None else None

    def on_timer(self, now_ms: float) -> None:
        """Complete the switch when its time has come."""
        p = self._pending
        if p is None or p.done_ms is None or now_ms < p.done_ms:
            return
        self._pending = None
        if p.fail:
            self.status = "switch-failed"
            return
        self._apply(p.cfg)
        self.status = "ready"

    def card_mode(self, card_index: int) -> str:
        if self.status in ("switching", "switch-failed"):
            return self.status
        if self.mode.mode == "mig" and not self.mode.profiles_for(card_index):
            return "default"
        return self.mode.mode

    # ------------------------------------------------------------------ allocation
    def allocate(self, req: VGpuRequest, worker: str, policy: Literal["binpack", "spread"] = "binpack",
                 exclude_cards: frozenset[int] = frozenset()) -> VGpu | None:
        """One vGPU for `worker`, or None when nothing free satisfies `req` (or the node is not ready)."""
        if self.status not in ("ready",):
            return None
        if req.profile is not None and self.mode.mode != "mig":
            return None
        mode = self.mode
        if mode.mode in ("default", "mig", "cambricon-env-share"):
            return self._take_slot(req, worker, exclude_cards)
        if isinstance(mode, HamiCoreMode):
            mem = math.ceil(req.memory_bytes / MIB)
            cores = math.ceil(req.sm_fraction * 100 - 1e-9)
            cands = [c for c in self._hami if c.index not in exclude_cards]
            card = hami_pick_card(cands, mem, cores, mode.gpu_scheduler_policy)
            if card is None:
                return None
            card.add(mem, cores)
            limit = cores / 100 if 0 < cores < 100 else 1.0
            vg = VGpu(self._next_id(card.index, "hami"), self.name, card.index, self.cards[card.index].gpu,
                      mem * MIB, 1.0, 1.0, "time-sliced", limit, mode.core_policy != "force")
            self._dynamic.append(_Dynamic(vg, worker, mem, cores))
            return vg
        return self._carve(req, worker, policy, exclude_cards)

    def _take_slot(self, req: VGpuRequest, worker: str, exclude: frozenset[int]) -> VGpu | None:
        free = [s for s in self._slots if s.holder is None and s.vgpu.card_index not in exclude
                and (req.profile is None or s.vgpu.profile == req.profile
                     or (s.placement is not None and req.profile in s.placement.profile.aliases))
                and s.vgpu.memory_bytes >= req.memory_bytes and s.vgpu.sm_fraction >= req.sm_fraction - 1e-9]
        if not free:
            return None
        best = min(free, key=lambda s: (s.vgpu.memory_bytes, s.vgpu.sm_fraction, s.vgpu.card_index))
        best.holder = worker
        return best.vgpu

    def _carve(self, req: VGpuRequest, worker: str, policy: str, exclude: frozenset[int]) -> VGpu | None:
        """Fractional shares (units of 0.01 fGPU) or sMLU (vmemory units, vcore %)."""
        cfg = self.acc.plugin_config
        fits: list[tuple[int, int, int]] = []  # (free units, card, need)
        for card in self.cards:
            if card.index in exclude:
                continue
            cap_mem, cap_core = self._cap[card.index]
            used_m = sum(d.mem_units for d in self._dynamic if d.vgpu.card_index == card.index)
            used_c = sum(d.core_units for d in self._dynamic if d.vgpu.card_index == card.index)
            if self.mode.mode == "fractional":
                need_share = max(Decimal(req.memory_bytes) / cfg.unit_mem,
                                 Decimal(req.sm_fraction * card.gpu.sms) / cfg.unit_proc, cfg.quantum_size)
                need_share = (need_share / cfg.quantum_size).to_integral_value(rounding=ROUND_UP) * cfg.quantum_size
                need, need_c = int(need_share * 100), 0
            else:
                unit = self._smlu_unit_mib(card)
                need = max(1, math.ceil(req.memory_bytes / MIB / unit))
                need_c = max(1, math.ceil(req.sm_fraction * 100 - 1e-9))
            if cap_mem - used_m >= need and cap_core - used_c >= need_c:
                fits.append((cap_mem - used_m, card.index, need))
        if not fits:
            return None
        free_units, idx, need = min(fits) if policy == "binpack" else max(fits, key=lambda f: (f[0], -f[1]))
        card = self.cards[idx]
        if self.mode.mode == "fractional":
            mem, procs = share_to_spec(Decimal(need) / 100, cfg)
            vg = VGpu(self._next_id(idx, "frac"), self.name, idx, card.gpu, mem, 1.0, 1.0, "time-sliced",
                      min(1.0, procs / card.gpu.sms), False)
            self._dynamic.append(_Dynamic(vg, worker, need, 0))
        else:
            vcore = max(1, math.ceil(req.sm_fraction * 100 - 1e-9))
            vg = VGpu(self._next_id(idx, "smlu"), self.name, idx, card.gpu, need * self._smlu_unit_mib(card) * MIB,
                      1.0, 1.0, "time-sliced", vcore / 100, False)
            self._dynamic.append(_Dynamic(vg, worker, need, vcore))
        return vg

    def _smlu_unit_mib(self, card: Card) -> int:
        unit = getattr(self.mode, "min_dsmlu_unit_mib", 0)
        return int(unit) if unit else max(1, card.gpu.memory_bytes // MIB // 100)

    def _next_id(self, card_index: int, kind: str) -> str:
        self._seq += 1
        return f"{self.name}/{card_index}/{kind}{self._seq}"

    def release(self, vgpu_id: str, now_ms: float = 0.0) -> None:
        """Give back one vGPU (whoever holds it)."""
        for s in self._slots:
            if s.vgpu.vgpu_id == vgpu_id:
                s.holder = None
        for d in [d for d in self._dynamic if d.vgpu.vgpu_id == vgpu_id]:
            if self._hami:
                self._hami[d.vgpu.card_index].remove(d.mem_units, d.core_units)
            self._dynamic.remove(d)
        if self.status == "draining" and not self.workers():
            self._start_switch(now_ms)

    def free(self, worker: str, now_ms: float = 0.0) -> int:
        """Release every vGPU `worker` holds; returns how many. Completes draining when the node empties."""
        n = 0
        for s in self._slots:
            if s.holder == worker:
                s.holder, n = None, n + 1
        keep = []
        for d in self._dynamic:
            if d.holder == worker:
                if self._hami:
                    self._hami[d.vgpu.card_index].remove(d.mem_units, d.core_units)
                n += 1
            else:
                keep.append(d)
        self._dynamic = keep
        if self.status == "draining" and not self.workers():
            self._start_switch(now_ms)
        return n

    # ------------------------------------------------------------------ views
    def workers(self) -> list[str]:
        """Hosted workers, sorted."""
        names = {s.holder for s in self._slots if s.holder} | {d.holder for d in self._dynamic}
        return sorted(n for n in names if n)

    def vgpus(self) -> list[tuple[VGpu, str | None]]:
        """Every vGPU that exists now and its holder (None = free)."""
        return [(s.vgpu, s.holder) for s in self._slots] + [(d.vgpu, d.holder) for d in self._dynamic]

    def cotenants(self, vgpu_id: str) -> list[VGpu]:
        """Other held time-sliced vGPUs on the same physical card (for the contention model)."""
        mine = next(v for v, _ in self.vgpus() if v.vgpu_id == vgpu_id)
        return [v for v, h in self.vgpus() if h and v.card_index == mine.card_index and v.vgpu_id != vgpu_id
                and v.isolation == "time-sliced"]

    def max_split(self, card_index: int) -> int:
        """Most vGPUs the card can hold in the current mode."""
        m = self.mode
        if self.status in ("switching", "switch-failed"):
            return 0
        if isinstance(m, HamiCoreMode):
            return m.device_split_count
        if m.mode in ("mig", "default", "cambricon-env-share"):
            return sum(1 for s in self._slots if s.vgpu.card_index == card_index)
        cap_mem, cap_core = self._cap[card_index]
        return cap_mem if m.mode == "fractional" else min(cap_mem, cap_core)

    def free_capacity(self, card_index: int) -> tuple[int, float]:
        """(free memory bytes, free SM fraction) on one card, in the current mode's terms."""
        if self.status in ("switching", "switch-failed"):
            return 0, 0.0
        if self._hami:
            h = self._hami[card_index]
            return (h.devmem_mib - h.usedmem_mib) * MIB, (h.devcore - h.usedcores) / 100
        held = [d for d in self._dynamic if d.vgpu.card_index == card_index]
        if self._cap:
            gpu = self.cards[card_index].gpu
            used_mem = sum(d.vgpu.memory_bytes for d in held)
            used_sm = sum(d.vgpu.core_limit for d in held)
            return max(0, gpu.memory_bytes - used_mem), max(0.0, 1.0 - used_sm)
        free = [s.vgpu for s in self._slots if s.vgpu.card_index == card_index and s.holder is None]
        return sum(v.memory_bytes for v in free), sum(v.sm_fraction for v in free)


def _cards_from_file(acc: AcceleratorFile, cat: Catalog) -> list[Card]:
    """Physical cards: whole devices in order, then one card per distinct MIG mother_uuid."""
    cards: list[Card] = []
    for dev in acc.whole_devices:
        spec = cat.find(dev.gpu or dev.model_name)
        if spec is None:
            raise ValueError(f"device {dev.mother_uuid}: model {dev.model_name!r} not in the GPU catalog (set gpu = ...)")
        cards.append(Card(len(cards), dev.mother_uuid, dev.numa_node, spec))
    seen: dict[str, int] = {}
    for dev in acc.mig_devices:
        if dev.mother_uuid in seen:
            continue
        spec = cat.find(dev.gpu or "")
        if spec is None:
            raise ValueError(f"MIG device {dev.model_name} on {dev.mother_uuid}: set gpu = <catalog key> of its card")
        seen[dev.mother_uuid] = len(cards)
        cards.append(Card(len(cards), dev.mother_uuid, dev.numa_node, spec))
    return cards


def _file_mig(acc: AcceleratorFile, cards: list[Card]) -> dict[int, list[str]]:
    by_uuid = {c.uuid: c.index for c in cards}
    out: dict[int, list[str]] = {}
    for dev in acc.mig_devices:
        out.setdefault(by_uuid[dev.mother_uuid], []).append(dev.mig_profile)
    return out


class NodeFileExtras(BaseModel):
    """clustersim additions to an accelerator file: `[node] name` and `[virtualization]`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]*$")


def load_node(path: str | Path, name: str | None = None) -> Node:
    """A node from an accelerator file with optional `[node]` and `[virtualization]` tables.

    Raises:
        ValueError: one line naming the file and the field (validation, unsupported mode, MIG set).
    """
    raw = read_toml(path)
    virt_raw = raw.pop("virtualization", None)
    node_raw = raw.pop("node", {})
    try:
        acc = AcceleratorFile.model_validate(raw)
        extras = NodeFileExtras.model_validate(node_raw)
    except ValidationError as exc:
        raise ValueError(f"{path}: {summarize_validation_error(exc)}") from exc
    try:
        cfg = _VIRT_ADAPTER.validate_python(virt_raw) if virt_raw is not None else None
    except ValidationError as exc:
        raise ValueError(f"{path}: virtualization.{summarize_validation_error(exc)}") from exc
    try:
        return Node.build(name or extras.name or Path(path).stem, acc, cfg)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


__all__ = ["Node", "Card", "VGpuRequest", "NodeStatus", "load_node", "load_accelerator"]
