"""What workload a run replays (`workload:` of a scenario; the replay flags build the same model)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cluster.workload.synthetic import SyntheticSpec


class WorkloadSpec(BaseModel):
    """A Mooncake trace, a synthetic workload, or (neither) the embedded 500-request sample."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    trace: str | None = None
    synthetic: SyntheticSpec | None = None
    trace_block_size: int = Field(512, ge=1, description="tokens per trace hash id")
    arrival_speedup_ratio: float = Field(1.0, gt=0.0)
    concurrency: int | None = Field(None, ge=1, description="closed loop: N session slots (facts §k)")
    max_sessions: int | None = Field(None, ge=1, description="use only the first N sessions")

    @model_validator(mode="after")
    def _one_source(self) -> "WorkloadSpec":
        if self.trace is not None and self.synthetic is not None:
            raise ValueError("give trace or synthetic, not both")
        return self
