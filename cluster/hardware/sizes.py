"""Human-readable sizes and display formatting, as Backend.AI forms them (facts §3.2, §3.6).

Operations:
- `parse_binary_size(text)`: Backend.AI `BinarySize` parsing. Case-insensitive, `_` ignored, a plain
  integer is bytes, suffixes k/m/g/t/p/e are powers of 1024 with or without `i`, optional trailing
  `b`/`byte(s)`/`ib`/`ibyte(s)`; decimals only with a suffix; the result must be a whole number of bytes.
  Infinite sizes are refused here: every size we read is a real capacity.
- `format_binary_size(n)`: `"40 GiB"` style, as `str(BinarySize)`.
- `format_amount(value, number_format, unit)`: a slot amount for display per `number_format`
  (`binary` picks 1024-based suffixes, `round_length` the number of decimals, rounded down).
"""

from __future__ import annotations

import re
from decimal import ROUND_DOWN, Decimal, InvalidOperation

from pydantic import BaseModel, ConfigDict, Field

_SUFFIX_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
_SIZE_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([kmgtpe]?)(i?b(?:ytes?)?)?$")
_BINARY_NAMES = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
_BINARY_PREFIX = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_DECIMAL_PREFIX = ("", "k", "M", "G", "T", "P", "E")


def parse_binary_size(text: str | int) -> int:
    """Bytes of a Backend.AI binary size string ("80G", "40GiB", "512m", "1.5g", "1_024").

    Raises:
        ValueError: the string is empty, malformed, infinite, negative or not a whole number of bytes.
    """
    if isinstance(text, bool):
        raise ValueError(f"not a size: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"negative size: {text}")
        return text
    raw = text.strip().lower().replace("_", "")
    if raw in ("inf", "infinite", "infinity"):
        raise ValueError(f"infinite size not allowed here: {text!r}")
    match = _SIZE_RE.match(raw)
    if match is None:
        raise ValueError(f"not a binary size (expected e.g. '80G', '40GiB', '512m'): {text!r}")
    number, suffix, tail = match.groups()
    if tail is not None and tail.startswith("i") and not suffix:
        raise ValueError(f"'i' needs a unit prefix (k/m/g/...): {text!r}")
    if "." in number and not suffix:
        raise ValueError(f"fractional bytes are not allowed: {text!r}")
    try:
        value = Decimal(number) * (Decimal(1024) ** _SUFFIX_POWER[suffix])
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only digits
        raise ValueError(f"not a binary size: {text!r}") from exc
    if value != value.to_integral_value():
        raise ValueError(f"size is not a whole number of bytes: {text!r}")
    return int(value)


def format_binary_size(num_bytes: int) -> str:
    """`"40 GiB"`: the largest binary unit that keeps the value >= 1, at most 3 significant decimals."""
    value = Decimal(num_bytes)
    idx = 0
    while abs(value) >= 1024 and idx < len(_BINARY_NAMES) - 1:
        value /= 1024
        idx += 1
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return f"{text} {_BINARY_NAMES[idx]}"


class NumberFormat(BaseModel):
    """`number_format` of a slot format: `binary` = 1024-based suffixes; `round_length` = decimals."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    binary: bool = False
    round_length: int = Field(default=0, ge=0)


def format_amount(value: Decimal | int | float, number_format: NumberFormat, unit: str = "") -> str:
    """A slot amount for display, e.g. `13.50 fGPU`, `8 GPU`, `1.50 KiB`.

    The value is scaled by 1000 (or 1024 when binary) while it is at least that large, then rounded
    DOWN to `round_length` decimals (never show more capacity than exists).
    """
    amount = Decimal(str(value))
    base = Decimal(1024) if number_format.binary else Decimal(1000)
    prefixes = _BINARY_PREFIX if number_format.binary else _DECIMAL_PREFIX
    idx = 0
    while abs(amount) >= base and idx < len(prefixes) - 1:
        amount /= base
        idx += 1
    quantum = Decimal(1).scaleb(-number_format.round_length)
    shown = amount.quantize(quantum, rounding=ROUND_DOWN)
    suffix = f"{prefixes[idx]}{unit}"
    return f"{shown:f} {suffix}" if suffix else f"{shown:f}"
