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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from cluster.hardware.accelerator import AcceleratorFile, read_toml
from cluster.hardware.catalog import Catalog, GpuSpec, default_catalog, summarize_validation_error
from cluster.hardware.inventory import INVENTORIES, Card, EmptyInventory, Inventory, VGpuRequest
from cluster.hardware.mig import place_or_raise
from cluster.hardware.virtualization import VGpu, VirtualizationConfig, VirtualizationError, check_supported

NodeStatus = Literal["ready", "draining", "switching", "switch-failed"]
_VIRT_ADAPTER: TypeAdapter[VirtualizationConfig] = TypeAdapter(VirtualizationConfig)


@dataclass(slots=True)
class _Pending:
    cfg: VirtualizationConfig
    switch_ms: float
    fail: bool
    done_ms: float | None = None


@dataclass
class Node:
    """One node. Build with `Node.build(name, acc, cfg)` or `load_node(path)`.

    The vGPUs of the current mode are an `Inventory` (`cluster.hardware.inventory`), built by the
    mode's entry in `INVENTORIES` when the mode is applied.
    """

    name: str
    acc: AcceleratorFile
    cards: list[Card]
    mode: VirtualizationConfig
    status: NodeStatus = "ready"
    _inventory: Inventory = field(default_factory=EmptyInventory)
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
        self._inventory = INVENTORIES[cfg.mode](self.name, self.cards, cfg, self.acc.whole_devices,
                                                self.acc.plugin_config, self._next_id)
        self.mode = cfg

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
        self._inventory = EmptyInventory()

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
        if self.status != "ready":
            return None
        if req.profile is not None and self.mode.mode != "mig":
            return None
        return self._inventory.allocate(req, worker, policy, exclude_cards)

    def _next_id(self, card_index: int, kind: str) -> str:
        self._seq += 1
        return f"{self.name}/{card_index}/{kind}{self._seq}"

    def release(self, vgpu_id: str, now_ms: float = 0.0) -> None:
        """Give back one vGPU (whoever holds it)."""
        self._inventory.release(vgpu_id)
        if self.status == "draining" and not self.workers():
            self._start_switch(now_ms)

    def free(self, worker: str, now_ms: float = 0.0) -> int:
        """Release every vGPU `worker` holds; returns how many. Completes draining when the node empties."""
        n = self._inventory.free(worker)
        if self.status == "draining" and not self.workers():
            self._start_switch(now_ms)
        return n

    # ------------------------------------------------------------------ views
    def workers(self) -> list[str]:
        """Hosted workers, sorted."""
        return sorted({h for _, h in self._inventory.held() if h})

    def vgpus(self) -> list[tuple[VGpu, str | None]]:
        """Every vGPU that exists now and its holder (None = free)."""
        return self._inventory.held()

    def cotenants(self, vgpu_id: str) -> list[VGpu]:
        """Other held time-sliced vGPUs on the same physical card (for the contention model)."""
        held = self.vgpus()
        mine = next(v for v, _ in held if v.vgpu_id == vgpu_id)
        return [v for v, h in held if h and v.card_index == mine.card_index and v.vgpu_id != vgpu_id
                and v.isolation == "time-sliced"]

    def max_split(self, card_index: int) -> int:
        """Most vGPUs the card can hold in the current mode."""
        return self._inventory.max_split(card_index)

    def free_capacity(self, card_index: int) -> tuple[int, float]:
        """(free memory bytes, free SM fraction) on one card, in the current mode's terms."""
        return self._inventory.free_capacity(card_index)


def _cards_from_file(acc: AcceleratorFile, cat: Catalog) -> list[Card]:
    """Physical cards: whole devices in order, then one card per distinct MIG mother_uuid."""
    cards: list[Card] = []
    for dev in acc.whole_devices:
        spec = cat.find(dev.gpu or dev.model_name)
        if spec is None:
            raise ValueError(f"device {dev.mother_uuid}: model {dev.model_name!r} not in the GPU catalog (set gpu = ...)")
        if acc.plugin_config.allocation_mode != "fractional":  # fractional shares are computed from memory_size
            _check_memory_size(acc.devices.index(dev), dev.memory_bytes, spec)
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


MEMORY_SIZE_TOLERANCE = 0.10
"""A whole card's `memory_size` may differ this much from its catalog entry (drivers report a bit
less than the marketing size: 81,559 MiB for an "80 GB" H100)."""


def _check_memory_size(index: int, memory_bytes: int, spec: GpuSpec) -> None:
    """Refuse a whole card whose `memory_size` is not its catalog memory: outside fractional mode
    vGPU sizes, KV blocks and the roofline come from the catalog card, so a different size would
    be silently ignored (fractional mode computes its shares from `memory_size` itself)."""
    from cluster.hardware.sizes import format_binary_size

    if abs(memory_bytes - spec.memory_bytes) > MEMORY_SIZE_TOLERANCE * spec.memory_bytes:
        raise ValueError(f"devices.{index}.memory_size: {format_binary_size(memory_bytes)} is not the memory of "
                         f"{spec.name} ({format_binary_size(spec.memory_bytes)} in the GPU catalog); give the card's "
                         "size with a unit, e.g. '80G', or set gpu = <catalog key> of the card it is")


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


__all__ = ["Node", "Card", "VGpuRequest", "NodeStatus", "load_node"]
