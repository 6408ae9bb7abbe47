"""Placing engine workers onto nodes' vGPUs (DESIGN §4 "placement").

A worker needs `dp_size x tp_size` vGPUs. The `tp_size` vGPUs of one DP rank come from one node and
distinct physical cards; DP ranks may land on different nodes. `policy` binpack prefers the fullest node
(fewest free vGPU-capable cards), spread the emptiest; ties by node name. Placement is all-or-nothing: on
failure nothing stays allocated. `free(worker)` returns everything the worker holds (call on worker exit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

from cluster.hardware.node import Node, VGpuRequest
from cluster.hardware.virtualization import VGpu

Policy = Literal["binpack", "spread"]


@dataclass(frozen=True, slots=True)
class WorkerPlacement:
    """vGPUs per DP rank (`ranks[d]` has tp_size vGPUs, same node, distinct cards)."""

    worker: str
    ranks: tuple[tuple[VGpu, ...], ...]


def _fullness(node: Node) -> float:
    """Fraction of a node's free memory in use (0 empty, 1 full)."""
    total = sum(c.gpu.memory_bytes for c in node.cards) or 1
    free = sum(node.free_capacity(c.index)[0] for c in node.cards)
    return 1.0 - free / total


class Placer:
    """Places and frees workers over a fixed list of nodes.

    Node fullness is cached and refreshed only for the nodes a placement or a free touched, so
    placing W workers on N nodes costs O(W N log N) comparisons, not W N fullness scans. The
    placer assumes it is the only one allocating on its nodes.
    """

    def __init__(self, nodes: Sequence[Node]) -> None:
        self.nodes = sorted(nodes, key=lambda n: n.name)
        self._where: dict[str, list[Node]] = {}
        self._full: dict[str, float] = {n.name: _fullness(n) for n in self.nodes}

    def _order(self, policy: Policy) -> list[Node]:
        sign = -1.0 if policy == "binpack" else 1.0
        full = self._full
        return sorted(self.nodes, key=lambda n: (sign * full[n.name], n.name))

    def _refresh(self, nodes: Sequence[Node]) -> None:
        for node in nodes:
            self._full[node.name] = _fullness(node)

    def place(self, worker: str, req: VGpuRequest, tp_size: int = 1, dp_size: int = 1,
              policy: Policy = "binpack") -> WorkerPlacement | None:
        """Allocate every rank of `worker`, or nothing (None) when it cannot be placed."""
        if worker in self._where:
            raise ValueError(f"worker {worker} is already placed")
        ranks: list[tuple[VGpu, ...]] = []
        touched: list[Node] = []
        for _ in range(dp_size):
            rank = self._place_rank(worker, req, tp_size, policy, touched)
            if rank is None:
                for node in touched:
                    node.free(worker)
                self._refresh(touched)
                return None
            ranks.append(rank)
            self._refresh(touched)
        self._where[worker] = touched
        return WorkerPlacement(worker, tuple(ranks))

    def _place_rank(self, worker: str, req: VGpuRequest, tp: int, policy: Policy,
                    touched: list[Node]) -> tuple[VGpu, ...] | None:
        for node in self._order(policy):
            got: list[VGpu] = []
            for _ in range(tp):
                used = frozenset(v.card_index for v in got)
                vg = node.allocate(req, worker, policy, exclude_cards=used)
                if vg is None:
                    break
                got.append(vg)
            if len(got) == tp:
                if node not in touched:
                    touched.append(node)
                return tuple(got)
            if got:
                self._release(node, worker, got)
        return None

    @staticmethod
    def _release(node: Node, worker: str, vgpus: list[VGpu]) -> None:
        """Give back the vGPUs of a rank that could not be completed on `node`."""
        for v in vgpus:
            node.release(v.vgpu_id)

    def free(self, worker: str, now_ms: float = 0.0) -> int:
        """Release the worker's vGPUs on every node; returns how many."""
        nodes = self._where.pop(worker, [])
        n = sum(node.free(worker, now_ms) for node in nodes)
        self._refresh(nodes)
        return n
