"""The prefill side of a disaggregated handoff: source KV held until its transfer ends.

A prefill rank (`worker_type: prefill`, `ROLE_TRAITS[...].decodes` false) runs a prompt; at the end
of the pass that computes its last prompt token the request leaves `running` without emitting a
client-visible token and its blocks stay allocated as the *source* of the KV transfer (facts §g:
"source held"). The host learns of it as a `Handoff` and, once the transfer to the decode worker
is over, calls `release_source`, which frees the blocks (cached blocks stay in the prefix cache as
inactive blocks, as after any completion).

Invariant: a held request is in no queue (`running`, `waiting`) and holds its blocks until released
or until the rank dies (`drop_all`: the cache is lost anyway).
"""

from __future__ import annotations

from actors.engine.kv.cache import KvCache
from actors.engine.protocol import Handoff
from actors.engine.request import EngineRequest
from actors.engine.scheduler.state import RankState


class HeldSources:
    """Requests whose prompt KV a prefill rank holds for a transfer, by request id."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: dict[int, EngineRequest] = {}

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, st: RankState, req: EngineRequest, now: float) -> Handoff:
        """The prompt is computed: the request leaves `running`, its blocks stay (the source)."""
        st.running.remove(req)
        self._held[req.request_id] = req
        req.record.end_ms = now
        return Handoff(req.request_id, now, req.record)

    def release(self, kv: KvCache, request_id: int) -> bool:
        """The transfer ended: free the source blocks. False when the request is not held here
        (the rank died and lost it, or it was released already)."""
        req = self._held.pop(request_id, None)
        if req is None:
            return False
        kv.free(req)
        return True

    def drop_all(self) -> None:
        self._held.clear()
