"""KV transfers over modelled links (scenario `topology: true`): NVLink inside a node, the NIC between nodes.

Beyond the reference (a flat bandwidth per transfer, no contention): each transfer from a prefill
rank's GPU to a decode rank's GPU crosses links, and concurrent transfers share each link fairly:

- same node, different GPUs: the source GPU's NVLink out and the destination GPU's NVLink in, each
  at half the catalog's `interconnect.gbps` (an aggregate of both directions: H100 SXM NVLink4
  900 GB/s -> 450 GB/s each way);
- different nodes: the NIC out of the source and into the destination, `nic_gbps` each
  (default 50 GB/s: one 400 Gb/s ConnectX-7 NDR InfiniBand port, as a DGX H100 has per GPU);
  `nic_rails: per_gpu` gives every GPU its own NIC (rail-optimised), `per_node` one NIC per node
  shared by all its GPUs. Abstract GPUs (no cluster) are one GPU per node;
- the same GPU (MIG slices or shares of one card): a device-local copy, not modelled (0 ms).

Sharing: a transfer's rate is the smallest fair share `capacity / active transfers` over its links;
rates are recomputed whenever a transfer starts or ends (piecewise-constant, exact in simulated
time). Invariant: the bytes a link carried never exceed its capacity times the time it was busy.
The model runs in the control shard (every link is one shared state), on its event loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from cluster.sim.clock import EventLoop, Priority

GB_PER_MS = 1e6
"""1 GB/s (decimal) = 1e6 bytes per ms."""
LINK_KEY = 1 << 45
"""Loop key of transfer completions (after every rank's events at one instant)."""

Link = tuple[str, ...]


@dataclass(frozen=True)
class Place:
    """Where a rank runs: its node, its card on the node, and the card's NVLink figure (GB/s, both ways)."""

    node: str
    card: int
    nvlink_gbps: float | None


@dataclass
class _Flow:
    links: tuple[Link, ...]
    remaining: float
    nbytes: int
    started_ms: float
    done: Callable[[float, float], None]
    rate: float = 0.0


@dataclass
class LinkStats:
    carried: dict[Link, float] = field(default_factory=dict)
    busy_ms: dict[Link, float] = field(default_factory=dict)
    transfer_ms: list[float] = field(default_factory=list)


class KvLinks:
    """See the module docstring. `start` a transfer; its `done(now, ms)` runs when its last byte arrives."""

    def __init__(self, loop: EventLoop, nic_gbps: float, rails: Literal["per_gpu", "per_node"],
                 send_times: list[float] | None = None) -> None:
        self.loop = loop
        self.nic_gbps = nic_gbps
        self.rails = rails
        self._flows: dict[int, _Flow] = {}
        self._capacity: dict[Link, float] = {}
        self._last_ms = 0.0
        self._token = 0
        self._send_times = send_times
        self.stats = LinkStats()

    def path(self, src: Place, dst: Place) -> tuple[tuple[Link, ...], tuple[float, ...]]:
        """The links a transfer crosses and their capacities (GB/s)."""
        if src.node == dst.node:
            if src.card == dst.card:
                return (), ()
            gbps = (src.nvlink_gbps or 0.0) / 2
            return ((("nvlink-out", src.node, str(src.card)), ("nvlink-in", dst.node, str(dst.card))),
                    (gbps, (dst.nvlink_gbps or 0.0) / 2))
        if self.rails == "per_gpu":
            return ((("nic-out", src.node, str(src.card)), ("nic-in", dst.node, str(dst.card))),
                    (self.nic_gbps, self.nic_gbps))
        return (("nic-out", src.node), ("nic-in", dst.node)), (self.nic_gbps, self.nic_gbps)

    def start(self, now: float, fid: int, src: Place, dst: Place, nbytes: int,
              done: Callable[[float, float], None]) -> None:
        links, caps = self.path(src, dst)
        if not links or nbytes <= 0 or min(caps) <= 0:
            self.stats.transfer_ms.append(0.0)
            done(now, 0.0)
            return
        self._advance(now)
        for link, cap in zip(links, caps):
            self._capacity[link] = cap * GB_PER_MS
        self._flows[fid] = _Flow(links, float(nbytes), nbytes, now, done)
        self._reschedule(now)

    def _advance(self, now: float) -> None:
        dt = now - self._last_ms
        if dt > 0:
            st = self.stats
            busy: set[Link] = set()
            for f in self._flows.values():
                f.remaining -= f.rate * dt
                for link in f.links:
                    st.carried[link] = st.carried.get(link, 0.0) + f.rate * dt
                    busy.add(link)
            for link in busy:
                st.busy_ms[link] = st.busy_ms.get(link, 0.0) + dt
        self._last_ms = now

    def _reschedule(self, now: float) -> None:
        users: dict[Link, int] = {}
        for f in self._flows.values():
            for link in f.links:
                users[link] = users.get(link, 0) + 1
        first = math.inf
        for f in self._flows.values():
            f.rate = min(self._capacity[link] / users[link] for link in f.links)
            first = min(first, now + max(f.remaining, 0.0) / f.rate)
        self._token += 1
        if self._flows:
            self.loop.schedule(first, Priority.CONTROL, LINK_KEY, self._on_due, self._token)
            if self._send_times is not None:
                import heapq

                heapq.heappush(self._send_times, first)

    def _on_due(self, now: float, token: int) -> None:
        if token != self._token:
            return  # superseded by a later start or end
        self._advance(now)
        finished = sorted(fid for fid, f in self._flows.items() if f.remaining <= 1e-6 * f.nbytes)
        for fid in finished:
            f = self._flows.pop(fid)
            self.stats.transfer_ms.append(now - f.started_ms)
            f.done(now, now - f.started_ms)
        self._reschedule(now)

    def summary(self, duration_ms: float) -> dict[str, float | str | None]:
        """Mean and p99 transfer time, and the busiest link's utilisation over the run."""
        times = sorted(self.stats.transfer_ms)
        st = self.stats
        busiest = max(st.carried, key=lambda link: (st.carried[link] / self._capacity[link], link), default=None)
        util = (st.carried[busiest] / (self._capacity[busiest] * duration_ms)
                if busiest is not None and duration_ms > 0 else 0.0)
        return {
            "transfers": float(len(times)),
            "mean_transfer_ms": sum(times) / len(times) if times else 0.0,
            "p99_transfer_ms": times[max(0, math.ceil(0.99 * len(times)) - 1)] if times else 0.0,
            "busiest_link": None if busiest is None else ":".join(busiest),
            "busiest_link_utilization": util,
        }
