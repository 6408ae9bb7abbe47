"""Rust `rand` 0.9's `StdRng` in numpy, draw for draw (facts §k).

The reference replay draws every random choice of its synthetic generator from
`StdRng::seed_from_u64(seed)`: ChaCha12 keyed by 32 bytes that a PCG32 stream expands
from the u64 seed (rand_core's default `seed_from_u64`), with a 64-bit block counter in
words 12-13 and a zero stream id in words 14-15. Its output is one flat stream of
little-endian u32 words (block 0 words 0..15, block 1, ...):
- `next_u32` takes one word; `next_u64` takes two, the first as the low half;
- `random::<f64>()` is `(next_u64 >> 11) * 2**-53`, in [0, 1);
- `random_range(0..n)` for n <= 2**32 is Lemire's widening multiply on `next_u32` with
  Canon's one-word correction (rand 0.9's `UniformInt::sample_single_inclusive`).

`RustStdRng` keeps a cursor into that word stream and generates whole ChaCha blocks with
numpy, vectorised over blocks, so 100k f64 draws cost a few milliseconds.

Invariant: a `RustStdRng(seed)` yields exactly the values the Rust `StdRng` with the same
seed yields for the same sequence of calls (checked against recorded reference streams
in `tests/test_rust_rng.py`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_MASK64 = (1 << 64) - 1
_PCG_MUL = 6364136223846793005
_PCG_INC = 11634580027462260723
_SIGMA = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)  # "expand 32-byte k"
_DOUBLE_ROUNDS = 6  # ChaCha12
_F64_SCALE = 2.0 ** -53

U32Array = npt.NDArray[np.uint32]


def pcg32_key(seed: int) -> tuple[int, ...]:
    """The eight ChaCha key words `seed_from_u64(seed)` produces (PCG32 XSH-RR, state advanced first)."""
    state = seed & _MASK64
    words: list[int] = []
    for _ in range(8):
        state = (state * _PCG_MUL + _PCG_INC) & _MASK64
        xorshifted = (((state >> 18) ^ state) >> 27) & 0xFFFFFFFF
        rot = state >> 59
        words.append(((xorshifted >> rot) | (xorshifted << ((32 - rot) & 31))) & 0xFFFFFFFF)
    return tuple(words)


def _rotl(x: U32Array, n: int) -> U32Array:
    return (x << np.uint32(n)) | (x >> np.uint32(32 - n))


def chacha_blocks(key: tuple[int, ...], first_block: int, num_blocks: int,
                  double_rounds: int = _DOUBLE_ROUNDS) -> U32Array:
    """`num_blocks` consecutive ChaCha blocks (ChaCha12 by default) from block counter
    `first_block`, stream id 0, as one flat array of `16 * num_blocks` u32 words in output order."""
    counters = np.arange(first_block, first_block + num_blocks, dtype=np.uint64)
    init = [np.full(num_blocks, w, dtype=np.uint32) for w in (*_SIGMA, *key)]
    init.append((counters & np.uint64(0xFFFFFFFF)).astype(np.uint32))
    init.append((counters >> np.uint64(32)).astype(np.uint32))
    init.append(np.zeros(num_blocks, dtype=np.uint32))
    init.append(np.zeros(num_blocks, dtype=np.uint32))
    x = [w.copy() for w in init]

    def quarter(a: int, b: int, c: int, d: int) -> None:
        x[a] += x[b]
        x[d] = _rotl(x[d] ^ x[a], 16)
        x[c] += x[d]
        x[b] = _rotl(x[b] ^ x[c], 12)
        x[a] += x[b]
        x[d] = _rotl(x[d] ^ x[a], 8)
        x[c] += x[d]
        x[b] = _rotl(x[b] ^ x[c], 7)

    with np.errstate(over="ignore"):
        for _ in range(double_rounds):
            quarter(0, 4, 8, 12)
            quarter(1, 5, 9, 13)
            quarter(2, 6, 10, 14)
            quarter(3, 7, 11, 15)
            quarter(0, 5, 10, 15)
            quarter(1, 6, 11, 12)
            quarter(2, 7, 8, 13)
            quarter(3, 4, 9, 14)
        out = np.stack([x[i] + init[i] for i in range(16)], axis=1)
    return out.reshape(-1)


class RustStdRng:
    """Rust `rand` 0.9 `StdRng::seed_from_u64(seed)`; see the module docstring."""

    def __init__(self, seed: int) -> None:
        if not 0 <= seed <= _MASK64:
            raise ValueError(f"seed must be a u64, got {seed}")
        self._key = pcg32_key(seed)
        self._words: U32Array = np.empty(0, dtype=np.uint32)
        self._pos = 0
        self._next_block = 0

    def _take(self, n: int) -> U32Array:
        """The next `n` words of the stream."""
        have = len(self._words) - self._pos
        if have < n:
            blocks = max(4, -(-(n - have) // 16))
            fresh = chacha_blocks(self._key, self._next_block, blocks)
            self._next_block += blocks
            self._words = np.concatenate((self._words[self._pos:], fresh))
            self._pos = 0
        out = self._words[self._pos:self._pos + n]
        self._pos += n
        return out

    def next_u32(self) -> int:
        return int(self._take(1)[0])

    def next_u64(self) -> int:
        lo, hi = self._take(2)
        return int(lo) | (int(hi) << 32)

    def u64s(self, n: int) -> npt.NDArray[np.uint64]:
        """`n` consecutive `next_u64` draws."""
        w = self._take(2 * n).astype(np.uint64)
        return w[0::2] | (w[1::2] << np.uint64(32))

    def f64s(self, n: int) -> npt.NDArray[np.float64]:
        """`n` consecutive `random::<f64>()` draws, each in [0, 1)."""
        return (self.u64s(n) >> np.uint64(11)).astype(np.float64) * _F64_SCALE

    def random_f64(self) -> float:
        return float(self.f64s(1)[0])

    def random_range(self, n: int) -> int:
        """`random_range(0..n)` for a usize range of 1 <= n <= 2**32."""
        if not 1 <= n <= 1 << 32:
            raise ValueError(f"range size must be in [1, 2**32], got {n}")
        if n == 1 << 32:
            return self.next_u32()
        wide = self.next_u32() * n
        result, lo = wide >> 32, wide & 0xFFFFFFFF
        if lo > ((-n) & 0xFFFFFFFF):
            hi2 = (self.next_u32() * n) >> 32
            result += (lo + hi2) >> 32
        return result

    def ranges(self, n: int, count: int) -> list[int]:
        """`count` consecutive `random_range(0..n)` draws (the words are fetched in bulk)."""
        if not 1 <= n <= 1 << 32:
            raise ValueError(f"range size must be in [1, 2**32], got {n}")
        if n == 1 << 32:
            return [int(w) for w in self._take(count)]
        threshold = (-n) & 0xFFFFFFFF
        out: list[int] = []
        while len(out) < count:
            # One word per remaining draw; a Canon correction takes the next word of the
            # stream, so the words after it are given back and fetched again.
            words = self._take(count - len(out)).tolist()
            for i, word in enumerate(words):
                wide = word * n
                result, lo = wide >> 32, wide & 0xFFFFFFFF
                if lo > threshold:
                    self._pos -= len(words) - i - 1
                    result += (lo + ((self.next_u32() * n) >> 32)) >> 32
                    out.append(result)
                    break
                out.append(result)
        return out
