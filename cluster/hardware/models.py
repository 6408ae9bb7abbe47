"""Model architectures (`configs/models/*.toml`) and the sizes derived from them (facts §4.2, §6.1).

- `layer_params`: 2 RMSNorms + q (h x heads*head_dim) + k, v (h x kv_heads*head_dim each) + o + experts x
  gate/up/down (3 x h x intermediate) + router (h x experts, MoE only). All layers are equal.
- `non_mapped_params`: embeddings (h x vocab) + lm_head (unless tied) + final norm (h); stays on the primary device.
- `kv_bytes_per_token = layers * 2 * kv_heads * head_dim * dtype_bytes`.
- `active_layer_params`: as layer_params with `experts_per_token` experts (what one token computes).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cluster.hardware.catalog import CONFIG_DIR, load_toml_model

MODELS_DIR = CONFIG_DIR / "models"
Dtype = Literal["bf16", "fp16", "fp8"]
DTYPE_BYTES: dict[str, int] = {"bf16": 2, "fp16": 2, "fp8": 1}


class ModelArch(BaseModel):
    """A decoder-only transformer. `dtype` sets weight and KV bytes (fp8 = 1 byte, FP8 tensor cores)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    num_layers: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    num_kv_heads: int = Field(ge=1)
    head_dim: int = Field(ge=1)
    intermediate_size: int = Field(ge=1)
    vocab_size: int = Field(ge=1)
    tie_word_embeddings: bool = False
    num_experts: int = Field(default=1, ge=1)
    experts_per_token: int = Field(default=1, ge=1)
    dtype: Dtype = "bf16"
    weight_pack_factor: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "ModelArch":
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError("num_attention_heads must be a multiple of num_kv_heads")
        if self.experts_per_token > self.num_experts:
            raise ValueError("experts_per_token cannot exceed num_experts")
        return self

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    def _layer(self, experts: int) -> int:
        h, q = self.hidden_size, self.num_attention_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        router = h * self.num_experts if self.num_experts > 1 else 0
        return 2 * h + h * q + 2 * h * kv + q * h + experts * 3 * h * self.intermediate_size + router

    @property
    def layer_params(self) -> int:
        return self._layer(self.num_experts)

    @property
    def active_layer_params(self) -> int:
        return self._layer(self.experts_per_token)

    @property
    def non_mapped_params(self) -> int:
        emb = self.hidden_size * self.vocab_size
        return emb + (0 if self.tie_word_embeddings else emb) + self.hidden_size

    @property
    def total_params(self) -> int:
        return self.num_layers * self.layer_params + self.non_mapped_params

    @property
    def layer_bytes(self) -> int:
        return self.layer_params * self.dtype_bytes // self.weight_pack_factor

    @property
    def non_mapped_bytes(self) -> int:
        return self.non_mapped_params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        return self.num_layers * self.kv_bytes_per_token_layer

    @property
    def kv_bytes_per_token_layer(self) -> int:
        return 2 * self.num_kv_heads * self.head_dim * self.dtype_bytes

    def with_dtype(self, dtype: Dtype) -> "ModelArch":
        return self.model_copy(update={"dtype": dtype})


def load_model(path: str | Path) -> ModelArch:
    """Read and validate a model file (ValueError naming the file and field)."""
    return load_toml_model(path, ModelArch)


@lru_cache(maxsize=32)
def get_model(name: str) -> ModelArch:
    """A shipped model by name (`configs/models/<name>.toml`, case-insensitive)."""
    path = MODELS_DIR / f"{name.lower()}.toml"
    if not path.exists():
        known = sorted(p.stem for p in MODELS_DIR.glob("*.toml"))
        raise KeyError(f"unknown model {name!r}; known: {', '.join(known)}")
    return load_model(path)
