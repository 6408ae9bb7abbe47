"""Node-wide virtualization modes, the vGPUs they yield, HAMi arithmetic and the contention model.

Modes (DESIGN §7, facts §1, §2, §2.9, §3):
- `default`: whole cards, exclusive.
- `mig`: each card partitioned into GPU instances (profiles per card; legal placements per model); only
  MIG-capable NVIDIA models. Hardware-isolated: SM fraction = profile SMs / full SMs, bandwidth fraction =
  memory slices / all slices.
- `hami-core`: per card `device_split_count` slots, memory seen as floor(MiB x memory scaling), cores
  100 x core scaling (overcommit when scaling > 1). vGPUs are carved per request (memory MiB, cores %);
  a card is chosen by HAMi's binpack/spread GPU score. Time-sliced.
- `cambricon-dynamic-smlu`: vcore % and vmemory in `min_dsmlu_unit_mib` units per request. Time-sliced, hard
  limits.
- `cambricon-env-share`: `virtualization_num` fake devices per card; no isolation.
- `fractional`: Backend.AI fGPU shares from the accelerator file's plugin_config. Time-sliced, hard limits.
Vendor/mode pairs outside `SUPPORTED_MODES` are refused with a message.

Contention: `ContentionModel.throughput_fraction(busy_cotenant_limits)` gives the fraction of the card's
speed a time-sliced vGPU gets while the listed co-tenants on the same card are busy. Alone, a
work-conserving share (HAMi default policy, env-share) runs at full speed; a hard-limited one at its limit.
With several busy, each gets its limit when the limits sum to <= 1, else limit / sum (overcommit), times
(1 - switch_overhead). MIG and exclusive vGPUs always get 1.0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from cluster.hardware.catalog import GpuSpec


Isolation = Literal["exclusive", "mig", "time-sliced"]
ModeName = Literal["default", "mig", "hami-core", "cambricon-dynamic-smlu", "cambricon-env-share", "fractional"]
MIB = 1024 * 1024


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class DefaultMode(_Frozen):
    mode: Literal["default"] = "default"


class MigMode(_Frozen):
    """`profiles` applies to every card; `per_card` (card index -> profiles) overrides single cards."""

    mode: Literal["mig"] = "mig"
    profiles: tuple[str, ...] = ()
    per_card: dict[int, tuple[str, ...]] = {}

    def profiles_for(self, card_index: int) -> tuple[str, ...]:
        return self.per_card.get(card_index, self.profiles)


class HamiCoreMode(_Frozen):
    """HAMi chart defaults (facts §2.1). `device_split_count` is at most 1024:
    HAMi itself sets no limit, but a card time-sliced among more tasks than that is a typo, not a plan."""

    mode: Literal["hami-core"] = "hami-core"
    device_split_count: int = Field(default=10, ge=1, le=1024)
    device_memory_scaling: float = Field(default=1.0, gt=0)
    device_core_scaling: float = Field(default=1.0, gt=0)
    gpu_scheduler_policy: Literal["binpack", "spread"] = "spread"
    core_policy: Literal["default", "force", "disable"] = "default"


class CambriconDynamicSmluMode(_Frozen):
    mode: Literal["cambricon-dynamic-smlu"] = "cambricon-dynamic-smlu"
    min_dsmlu_unit_mib: int = Field(default=256, ge=0)


class CambriconEnvShareMode(_Frozen):
    mode: Literal["cambricon-env-share"] = "cambricon-env-share"
    virtualization_num: int = Field(default=1, ge=1)


class FractionalMode(_Frozen):
    mode: Literal["fractional"] = "fractional"


VirtualizationConfig = Annotated[
    Union[DefaultMode, MigMode, HamiCoreMode, CambriconDynamicSmluMode, CambriconEnvShareMode, FractionalMode],
    Field(discriminator="mode"),
]

SUPPORTED_MODES: dict[str, tuple[str, ...]] = {
    "nvidia": ("default", "mig", "hami-core", "fractional"),
    "cambricon": ("default", "cambricon-dynamic-smlu", "cambricon-env-share", "fractional"),
}


class VirtualizationError(ValueError):
    """A mode the hardware cannot run, or a request the mode cannot satisfy."""


def check_supported(mode: str, gpus: Sequence[GpuSpec]) -> None:
    """Refuse vendor/mode pairs that do not exist, and MIG on models without MIG."""
    for gpu in gpus:
        allowed = SUPPORTED_MODES[gpu.vendor]
        if mode not in allowed:
            raise VirtualizationError(
                f"mode {mode!r} does not exist for {gpu.vendor} {gpu.name}; {gpu.vendor} supports: {', '.join(allowed)}"
            )
        if mode == "mig" and not gpu.mig_capable:
            raise VirtualizationError(f"{gpu.name} is not MIG-capable (MIG needs A100/A30/H100/H200/B200-class cards)")


@dataclass(frozen=True, slots=True)
class VGpu:
    """A virtual GPU an engine worker runs on.

    Invariants: 0 < sm_fraction <= 1 and 0 < bandwidth_fraction <= 1 are the hardware shares it is
    guaranteed (1.0 for time-sliced shares, whose speed comes from the contention model); `core_limit`
    in (0, 1] is the SM-time limit under contention (1.0 = none); memory_bytes is what the worker may use.
    """

    vgpu_id: str
    node: str
    card_index: int
    gpu: GpuSpec
    memory_bytes: int
    sm_fraction: float
    bandwidth_fraction: float
    isolation: Isolation
    core_limit: float = 1.0
    work_conserving: bool = True
    profile: str | None = None

    def contention(self, switch_overhead: float = 0.03) -> "ContentionModel":
        return ContentionModel(self.isolation, self.core_limit, self.work_conserving, switch_overhead)


@dataclass(frozen=True, slots=True)
class ContentionModel:
    """How busy co-tenants on one physical card slow a vGPU down (see module docstring)."""

    isolation: Isolation
    core_limit: float = 1.0
    work_conserving: bool = True
    switch_overhead: float = 0.03

    def throughput_fraction(self, busy_cotenant_limits: Sequence[float] = ()) -> float:
        """Fraction of the alone-on-the-card speed while the given co-tenants (their core limits) are busy."""
        if self.isolation != "time-sliced":
            return 1.0
        if not busy_cotenant_limits:
            return 1.0 if self.work_conserving else self.core_limit
        total = self.core_limit + sum(busy_cotenant_limits)
        share = self.core_limit if total <= 1.0 + 1e-12 else self.core_limit / total
        return share * (1.0 - self.switch_overhead)

    def slowdown(self, num_busy_cotenants: int) -> float:
        """Time multiplier (>= 1 for work-conserving shares) with `num_busy_cotenants` equal co-tenants busy."""
        return 1.0 / self.throughput_fraction([self.core_limit] * num_busy_cotenants)


# ----------------------------------------------------------------------------------------------- HAMi
@dataclass(slots=True)
class HamiCard:
    """HAMi's view of one physical GPU (facts §2.2-2.4): capacity as registered, and usage."""

    index: int
    numa: int
    count: int
    devmem_mib: int
    devcore: int
    used: int = 0
    usedmem_mib: int = 0
    usedcores: int = 0

    @classmethod
    def register(cls, index: int, numa: int, gpu_memory_bytes: int, cfg: HamiCoreMode) -> "HamiCard":
        """count = split count, devmem = floor(MiB x memory scaling), devcore = 100 x core scaling."""
        return cls(index, numa, cfg.device_split_count,
                   math.floor(gpu_memory_bytes // MIB * cfg.device_memory_scaling),
                   int(round(100 * cfg.device_core_scaling)))

    def fits(self, mem_mib: int, cores: int) -> bool:
        """HAMi's Fit checks for one card."""
        if self.used >= self.count:
            return False
        if self.devmem_mib - self.usedmem_mib < mem_mib or self.devcore - self.usedcores < cores:
            return False
        if cores == 100 and self.devcore == 100 and self.used > 0:
            return False
        if cores == 0 and self.usedcores >= self.devcore:
            return False
        return True

    def score(self, mem_mib: int, cores: int, weights: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> float:
        """GPU score including the request: 10 x (wS*slots + wC*cores + wM*mem) usage fractions."""
        ws, wc, wm = weights
        return 10.0 * (ws * (1 + self.used) / self.count + wc * (cores + self.usedcores) / self.devcore
                       + wm * (mem_mib + self.usedmem_mib) / self.devmem_mib)

    def add(self, mem_mib: int, cores: int) -> None:
        self.used += 1
        self.usedmem_mib += mem_mib
        self.usedcores += cores

    def remove(self, mem_mib: int, cores: int) -> None:
        self.used -= 1
        self.usedmem_mib -= mem_mib
        self.usedcores -= cores
        assert self.used >= 0 and self.usedmem_mib >= 0 and self.usedcores >= 0, "HAMi usage went negative"


def hami_pick_card(cards: Sequence[HamiCard], mem_mib: int, cores: int, policy: Literal["binpack", "spread"],
                   weights: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> HamiCard | None:
    """Card HAMi would choose: binpack = highest score first, spread = lowest; ties by NUMA id, then index."""
    fitting = [c for c in cards if c.fits(mem_mib, cores)]
    if not fitting:
        return None
    sign = -1.0 if policy == "binpack" else 1.0
    return min(fitting, key=lambda c: (sign * c.score(mem_mib, cores, weights), c.numa, c.index))


def hami_node_score(cards: Sequence[HamiCard]) -> float:
    """Node score before adding a pod: 10 x (used/count + usedcores/devcore + usedmem/devmem) summed over cards."""
    return 10.0 * (sum(c.used for c in cards) / sum(c.count for c in cards)
                   + sum(c.usedcores for c in cards) / sum(c.devcore for c in cards)
                   + sum(c.usedmem_mib for c in cards) / sum(c.devmem_mib for c in cards))


def hami_resolve_request(card: HamiCard, mem_mib: int | None, mem_percent: int | None,
                         cores: int | None) -> tuple[int, int]:
    """(memory MiB, cores %) of a request: explicit MiB wins, else percent of the card's scaled memory,
    else the whole card; cores clamp to 100 and a whole-memory request with no cores takes 100 (exclusive)."""
    if mem_mib is not None:
        mem = mem_mib
        whole = False
    elif mem_percent:
        if not 0 < mem_percent <= 100:
            raise VirtualizationError(f"gpumem-percentage must be in 0..100, got {mem_percent}")
        mem = card.devmem_mib * mem_percent // 100
        whole = mem_percent == 100
    else:
        mem, whole = card.devmem_mib, True
    core = min(cores, 100) if cores is not None else (100 if whole else 0)
    return mem, core
