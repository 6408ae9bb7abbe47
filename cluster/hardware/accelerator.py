"""Mock accelerator files in the Backend.AI mock-plugin schema (facts §3), and the slots they yield.

File format (TOML), as `configs/accelerator/mock-accelerator.toml` in Backend.AI, plus one clustersim table:
- `slot_name`, `device_plugin_name` ("CUDADevice" | "MockDevice"), `attributes` (free strings),
  `formats.<subtype>` (display fields and `number_format`), `devices[]` (mother_uuid, model_name, numa_node,
  subproc_count, memory_size, is_mig_device, and optional `gpu` = catalog key when model_name does not
  resolve, e.g. for MIG slices).
- `[plugin_config]`: what Backend.AI keeps in etcd (allocation_mode, unit_mem, unit_proc, quantum_size,
  reserved_memory). Defaults are the mock plugin's.
Unlike Backend.AI (trafaret, extra keys allowed) unknown keys are refused, so typos surface.

Slots (facts §3.4), `resource_slots(acc)`:
- discrete: `<slot>.device` = number of non-MIG devices;
- fractional: `<slot>.shares` = sum over non-MIG devices of floor_0.01(min(mem/unit_mem, procs/unit_proc));
- MIG devices: one slot `<slot>.device:<profile>-mig` per profile, `<profile>` = model_name after the first "-".
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Literal

import tomllib
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cluster.hardware.catalog import summarize_validation_error
from cluster.hardware.sizes import NumberFormat, format_amount, parse_binary_size

SHARE_QUANTUM = Decimal("0.01")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _size_field(v: object) -> int:
    if isinstance(v, (str, int)) and not isinstance(v, bool):
        return parse_binary_size(v)
    raise ValueError("expected a binary size string like '80G', '40GiB' or '512m'")


class SlotFormat(_Frozen):
    """`formats.<subtype>`: how the web UI shows a slot."""

    human_readable_name: str
    description: str
    display_unit: str
    display_icon: str
    number_format: NumberFormat = NumberFormat()


class MockDevice(_Frozen):
    """One `devices[]` entry. `subproc_count` is the SM count; `memory_bytes` comes from `memory_size`."""

    mother_uuid: str = Field(min_length=1)
    model_name: str = Field(min_length=1)
    numa_node: int = Field(ge=0)
    subproc_count: int = Field(ge=1)
    memory_bytes: int = Field(gt=0, validation_alias=AliasChoices("memory_size", "memory_bytes"))
    is_mig_device: bool | None = Field(default=None, validation_alias=AliasChoices("is_mig_device", "is_mig_devices"))
    gpu: str | None = None

    @field_validator("memory_bytes", mode="before")
    @classmethod
    def _parse_mem(cls, v: object) -> int:
        return _size_field(v)

    @property
    def mig_profile(self) -> str:
        """The profile part of a MIG device's model_name (after the first '-'), as the plugin forms it."""
        _, _, rest = self.model_name.partition("-")
        return rest


class PluginConfig(_Frozen):
    """Backend.AI's etcd plugin config (facts §3.3); defaults are the mock plugin's."""

    allocation_mode: Literal["discrete", "fractional"] = "discrete"
    unit_mem: int = Field(default=2 * 1024**3)
    unit_proc: int = Field(default=8, ge=2)
    quantum_size: Decimal = Field(default=Decimal("0.1"), gt=0)
    reserved_memory: int = Field(default=64 * 1024**2, ge=0)

    @field_validator("unit_mem", "reserved_memory", mode="before")
    @classmethod
    def _parse(cls, v: object) -> int:
        return _size_field(v)

    @field_validator("unit_mem")
    @classmethod
    def _min_unit_mem(cls, v: int) -> int:
        if v < 512 * 1024**2:
            raise ValueError("unit_mem must be at least 512 MiB")
        return v


class AcceleratorFile(_Frozen):
    """A whole mock accelerator file. Invariant: CUDA devices state `is_mig_device` explicitly."""

    slot_name: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9_]*$")
    device_plugin_name: Literal["CUDADevice", "MockDevice"]
    attributes: dict[str, str] = {}
    formats: dict[str, SlotFormat]
    devices: tuple[MockDevice, ...] = Field(min_length=1)
    plugin_config: PluginConfig = PluginConfig()

    @model_validator(mode="after")
    def _check(self) -> "AcceleratorFile":
        whole = [d.mother_uuid for d in self.devices if not d.is_mig_device]
        mig_cards = {d.mother_uuid for d in self.devices if d.is_mig_device}
        for i, dev in enumerate(self.devices):
            # a whole card's uuid is its identity; MIG slices share their card's uuid (and no whole card has it)
            if not dev.is_mig_device and (whole.count(dev.mother_uuid) > 1 or dev.mother_uuid in mig_cards):
                raise ValueError(f"devices.{i}.mother_uuid: {dev.mother_uuid!r} is used by another device")
            if self.slot_name == "cuda" and dev.is_mig_device is None:
                raise ValueError(f"devices.{i}.is_mig_device is required when slot_name is 'cuda'")
            if dev.is_mig_device and not dev.mig_profile:
                raise ValueError(f"devices.{i}.model_name {dev.model_name!r}: a MIG device needs '<prefix>-<profile>'")
        if self.format_key not in self.formats:
            raise ValueError(f"formats.{self.format_key!r} is missing (the plugin reads it for this file)")
        return self

    @property
    def has_mig(self) -> bool:
        return any(d.is_mig_device for d in self.devices)

    @property
    def format_key(self) -> str:
        """The formats key the plugin reads: "*-mig" if any MIG device, else "shares" or "device"."""
        if self.has_mig:
            return "*-mig"
        return "shares" if self.plugin_config.allocation_mode == "fractional" else "device"

    @property
    def whole_devices(self) -> list[MockDevice]:
        return [d for d in self.devices if not d.is_mig_device]

    @property
    def mig_devices(self) -> list[MockDevice]:
        return [d for d in self.devices if d.is_mig_device]


def device_share(dev: MockDevice, cfg: PluginConfig) -> Decimal:
    """fGPU share of a whole device: floor to 0.01 of min(mem / unit_mem, subproc_count / unit_proc)."""
    if dev.is_mig_device:
        raise ValueError(f"MIG device {dev.model_name} has no fractional share")
    raw = min(Decimal(dev.memory_bytes) / Decimal(cfg.unit_mem), Decimal(dev.subproc_count) / Decimal(cfg.unit_proc))
    return raw.quantize(SHARE_QUANTUM, rounding=ROUND_DOWN)


def share_to_spec(share: Decimal, cfg: PluginConfig) -> tuple[int, int]:
    """Container limits for an allocated share: (memory bytes, SM count) = (unit_mem x share truncated,
    max(int(unit_proc x share), 4))."""
    mem = int((Decimal(cfg.unit_mem) * share).to_integral_value(rounding=ROUND_DOWN))
    procs = max(int(Decimal(cfg.unit_proc) * share), 4)
    return mem, procs


def resource_slots(acc: AcceleratorFile) -> dict[str, Decimal]:
    """Slot name -> capacity, exactly as the mock plugin forms them (facts §3.4)."""
    slots: dict[str, Decimal] = {}
    whole = acc.whole_devices
    if whole:
        if acc.plugin_config.allocation_mode == "fractional":
            slots[f"{acc.slot_name}.shares"] = sum((device_share(d, acc.plugin_config) for d in whole), Decimal(0))
        else:
            slots[f"{acc.slot_name}.device"] = Decimal(len(whole))
    for dev in acc.mig_devices:
        key = f"{acc.slot_name}.device:{dev.mig_profile}-mig"
        slots[key] = slots.get(key, Decimal(0)) + 1
    return slots


def device_id(acc: AcceleratorFile, index: int) -> str:
    """The plugin's device id: mother_uuid, or `MIG-<mother_uuid>/<index>/0` for a MIG slice."""
    dev = acc.devices[index]
    return f"MIG-{dev.mother_uuid}/{index}/0" if dev.is_mig_device else dev.mother_uuid


def format_slot(acc: AcceleratorFile, slot: str, amount: Decimal) -> str:
    """Display an amount of `slot` with the file's format for it (MIG slots use "*-mig")."""
    subtype = "*-mig" if slot.endswith("-mig") else slot.partition(".")[2]
    fmt = acc.formats.get(subtype) or acc.formats[acc.format_key]
    return format_amount(amount, fmt.number_format, fmt.display_unit)


def load_accelerator(path: str | Path) -> AcceleratorFile:
    """Read and validate an accelerator file.

    Raises:
        ValueError: one line naming the file and the first bad field.
    """
    raw = read_toml(path)
    raw.pop("virtualization", None)  # a node file may carry clustersim virtualization settings
    try:
        return AcceleratorFile.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{path}: {summarize_validation_error(exc)}") from exc


def read_toml(path: str | Path) -> dict[str, object]:
    """TOML file contents, or ValueError naming the file."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc
