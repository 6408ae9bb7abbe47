"""Workers of a deployment: placement on vGPUs (or abstract GPUs), rank specs, timing and KV size.

`WorkerBuilder.build(deployment, worker_id, name, first_gidx)` places one worker and describes
its ranks (`RankSpec`), or returns None when no node has room:
- on a cluster, every DP rank gets `tp_size` vGPUs of one node (`cluster.hardware.placement`);
  on abstract GPUs (no `cluster`) each worker has its own GPU, node `gpu-<worker_id>`;
- timing models chosen by `engine.timing_model.type`: the hardware ones (`HARDWARE_TIMINGS`:
  roofline, from the model architecture and the vGPU, or the catalog GPU `timing_model.gpu` on
  abstract GPUs) are built here; the others by the engine from its config;
- KV blocks come from the device map of the model on the vGPU unless the engine sets
  `num_gpu_blocks`; time-sliced vGPUs on one physical card with roofline timing become a
  co-tenant group (they slow each other while busy).
The builder lives as long as the run, so workers added during it are built the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actors.engine.config import EngineConfig, ExternalTimingConfig, InterpolatedTimingConfig, RooflineTimingConfig
from actors.engine.timing.models import TimingModel
from cluster.control.workers import WorkerInfo
from cluster.plane.ranks import RankSpec

if TYPE_CHECKING:  # the hardware rooms load only when a cluster or a roofline model needs them
    from cluster.hardware.models import ModelArch
    from cluster.hardware.node import Node
    from cluster.hardware.virtualization import VirtualizationConfig
    from cluster.hardware.placement import Placer
    from cluster.hardware.virtualization import VGpu
from cluster.scenario.load import LoadedScenario
from cluster.scenario.spec import DeploymentSpec

GIB = 1024**3


@dataclass(frozen=True, slots=True)
class RankContext:
    """What a hardware timing model is built from."""

    model: ModelArch
    vgpu: VGpu
    engine: EngineConfig
    tp_size: int


def _roofline(ctx: RankContext) -> tuple[TimingModel, int]:
    from cluster.hardware.roofline import timing_and_blocks_for

    e = ctx.engine
    return timing_and_blocks_for(ctx.model, ctx.vgpu, e.block_size_tokens, max_seq_len=e.max_model_len or 4096,
                                 tp_size=ctx.tp_size)


HARDWARE_TIMINGS: dict[str, Callable[[RankContext], tuple[TimingModel, int]]] = {"roofline": _roofline}
"""`timing_model.type` -> (timing model, KV blocks) for the models that need the hardware."""


class WorkerBuilder:
    """See the module docstring. Raises `ScenarioError` for a model that cannot run on its vGPU."""

    def __init__(self, loaded: LoadedScenario, nodes: list[Node], emit_kv_token_ids: bool = False) -> None:
        """`emit_kv_token_ids`: KV events carry the blocks' tokens (wire formats need them)."""
        self.loaded = loaded
        self._token_ids = emit_kv_token_ids
        self.abstract = loaded.scenario.cluster is None
        self.placer: Placer | None = None
        if not self.abstract:
            from cluster.hardware.placement import Placer

            self.placer = Placer(nodes)
        self._groups: dict[tuple[str, int], int] = {}
        self._engines = [self._resolved(k, d) for k, d in enumerate(loaded.scenario.deployments)]
        self._index = {d.name: k for k, d in enumerate(loaded.scenario.deployments)}
        for k, engine in enumerate(self._engines):
            t = engine.timing_model
            try:
                self._model(engine)
            except (KeyError, ValueError) as exc:
                raise loaded.error(f"deployments.{k}.engine.timing_model.model", str(exc).strip('"')) from None
            if isinstance(t, RooflineTimingConfig) and t.gpu is not None:
                from cluster.hardware.catalog import default_catalog

                if default_catalog().find(t.gpu) is None:
                    raise loaded.error(f"deployments.{k}.engine.timing_model.gpu",
                                       f"unknown GPU {t.gpu!r}; known: {', '.join(sorted(default_catalog().gpu))}")

    def deployment_index(self, name: str) -> int | None:
        return self._index.get(name)

    def free(self, name: str, now_ms: float) -> None:
        if self.placer is not None:
            self.placer.free(name, now_ms)

    # ---- node mode switches (switch_mode faults; the fleet drives them) ----
    def _node(self, name: str) -> Node:
        assert self.placer is not None, "mode switches need a cluster"
        return next(n for n in self.placer.nodes if n.name == name)

    def switch_node(self, node: str, cfg: VirtualizationConfig, now_ms: float, switch_ms: float,
                    fail: bool) -> list[str]:
        """Start switching `node` to virtualization `cfg`; the workers to drain first.

        Raises:
            ValueError: the mode is refused for the node's hardware, or it is switching already.
        """
        return self._node(node).request_switch(cfg, now_ms, switch_ms, fail)

    def switch_done_ms(self, node: str) -> float | None:
        """When the node's switch completes (None: it is still draining, or not switching)."""
        return self._node(node).next_timer_ms()

    def complete_switch(self, node: str, now_ms: float) -> str:
        """Finish the switch: the new vGPUs appear (or the node stays out); the node's status."""
        n = self._node(node)
        n.on_timer(now_ms)
        assert self.placer is not None
        self.placer._refresh([n])  # its fullness changed with its vGPUs
        return n.status

    def _resolved(self, k: int, dep: DeploymentSpec) -> EngineConfig:
        """The deployment's engine config with its table paths resolved against the scenario."""
        e = dep.engine
        update: dict[str, Any] = {}
        t = e.timing_model
        where = f"deployments.{k}.engine"
        if isinstance(t, InterpolatedTimingConfig):
            path = self._table(t.path, f"{where}.timing_model.path")
            update["timing_model"] = t.model_copy(update={"path": path})
        elif isinstance(t, ExternalTimingConfig):
            path = self._table(t.config["path"], f"{where}.timing_model.config.path")
            update["timing_model"] = t.model_copy(update={"config": {**t.config, "path": path}})
        if e.planner_profile_data is not None:
            update["planner_profile_data"] = self._table(e.planner_profile_data, f"{where}.planner_profile_data")
        return e.model_copy(update=update) if update else e

    def _table(self, relative: str, where: str) -> str:
        """A timing table's resolved path, read once here so a missing, unreadable or malformed
        table is refused before the run, naming the field."""
        from actors.engine.timing.models import InterpolatedTiming

        path = self.loaded.resolve(relative, where)
        try:
            InterpolatedTiming.from_npz(path)
        except ValueError as exc:
            raise self.loaded.error(where, str(exc)) from None
        return str(path)

    def _model(self, engine: EngineConfig) -> ModelArch | None:
        t = engine.timing_model
        name = t.model if isinstance(t, RooflineTimingConfig) and t.model is not None else self.loaded.scenario.model
        if name is None:
            return None
        from cluster.hardware.models import get_model

        return get_model(name)

    def build(self, k: int, worker_id: int, name: str, first_gidx: int) -> WorkerInfo | None:
        """Place worker `name` of deployment `k`; None when no node has room for it."""
        dep = self.loaded.scenario.deployments[k]
        base = self._engines[k]
        if self.abstract:
            vgpu_ranks: tuple[tuple[VGpu, ...], ...] = ()
            rank_vgpus: list[VGpu | None] = [None] * dep.dp_size
            rank_nodes = [f"gpu-{worker_id}"] * dep.dp_size
            num_gpus = dep.tp_size
        else:
            from cluster.hardware.node import VGpuRequest

            assert self.placer is not None
            req = VGpuRequest(profile=dep.vgpu.profile, memory_bytes=int(dep.vgpu.memory_gib * GIB),
                              sm_fraction=dep.vgpu.sm_fraction)
            placed = self.placer.place(name, req, tp_size=dep.tp_size, dp_size=dep.dp_size, policy=dep.placement)
            if placed is None:
                return None
            vgpu_ranks = placed.ranks
            rank_vgpus = [vgpus[0] for vgpus in placed.ranks]
            rank_nodes = [vg.node for vg in rank_vgpus if vg is not None]
            num_gpus = sum(len(r) for r in placed.ranks)
        timings, blocks = self._rank_timings(k, dep, base, rank_vgpus)
        nb_min = min(blocks) if blocks else None
        if nb_min is not None and nb_min < 1 and "num_gpu_blocks" not in base.model_fields_set:
            model = self._model(base)
            where = rank_vgpus[0].vgpu_id if rank_vgpus[0] is not None else "its GPU"
            raise self.loaded.error(f"deployments.{k}", f"{model.name if model else 'the model'} leaves no room "
                                    f"for KV cache on {where}")
        engine = base.model_copy(update=_sizes(dep, base, nb_min, self._token_ids))
        if engine.kv_bytes_per_token is None and engine.kv_transfer_bandwidth:  # disagg: KV size from the model
            model = self._model(base)
            if model is not None:
                engine = engine.model_copy(update={"kv_bytes_per_token": model.kv_bytes_per_token})
        ranks = []
        for d, vg in enumerate(rank_vgpus):
            gid, limit = None, 1.0
            timing = timings[d]
            if timing is not None and vg is not None and vg.isolation == "time-sliced":
                gid = self._groups.setdefault((vg.node, vg.card_index), len(self._groups))
                limit = vg.core_limit
            ranks.append(RankSpec(first_gidx + d, worker_id, d, engine, timing, name, rank_nodes[d], gid, limit))
        return WorkerInfo(worker_id, name, dep.name, tuple(r.gidx for r in ranks), vgpu_ranks, engine, num_gpus,
                          tuple(rank_nodes), tuple(ranks))

    def _rank_timings(self, k: int, dep: DeploymentSpec, base: EngineConfig, rank_vgpus: list[VGpu | None],
                      ) -> tuple[list[TimingModel | None], list[int]]:
        """Per rank, its hardware timing model (None: the engine builds it), and the derived KV blocks."""
        t = base.timing_model
        hardware = HARDWARE_TIMINGS.get(t.type)
        model = self._model(base)
        if hardware is None and model is None:  # the engine times itself, and nothing sizes its KV cache
            return [None] * len(rank_vgpus), []
        from cluster.hardware.devicemap import DeviceMapError
        from cluster.hardware.roofline import whole_card_vgpu

        timings: list[TimingModel | None] = []
        blocks: list[int] = []
        for vg in rank_vgpus:
            if vg is None and isinstance(t, RooflineTimingConfig) and t.gpu is not None:
                vg = whole_card_vgpu(t.gpu, f"gpu-{len(timings)}")
            try:
                if hardware is not None:
                    assert model is not None and vg is not None  # checked by the scenario model
                    tm, nb = hardware(RankContext(model, vg, base, dep.tp_size))
                    timings.append(tm)
                    blocks.append(nb)
                else:
                    timings.append(None)
                    if model is not None and vg is not None:
                        blocks.append(_kv_blocks(model, vg, base, dep.tp_size))
            except DeviceMapError as exc:
                assert vg is not None and model is not None
                raise self.loaded.error(f"deployments.{k}", f"{model.name} on {vg.vgpu_id} "
                                        f"({vg.memory_bytes / GIB:.1f} GiB): {exc}") from None
        return timings, blocks


def _sizes(dep: DeploymentSpec, base: EngineConfig, num_gpu_blocks: int | None, token_ids: bool) -> dict[str, Any]:
    """dp/tp from the deployment; KV blocks when derived and the engine does not set them."""
    update: dict[str, Any] = {"dp_size": dep.dp_size, "tensor_parallel_size": dep.tp_size}
    if token_ids:
        update["emit_kv_token_ids"] = True
    if num_gpu_blocks is not None and "num_gpu_blocks" not in base.model_fields_set:
        update["num_gpu_blocks"] = num_gpu_blocks
    return update


def _kv_blocks(model: ModelArch, vgpu: VGpu, engine: EngineConfig, tp: int) -> int:
    from cluster.hardware.catalog import default_catalog
    from cluster.hardware.devicemap import auto_device_map, num_gpu_blocks

    cpu = default_catalog().cpu
    dmap = auto_device_map(model, [vgpu.memory_bytes], cpu.memory_bytes, engine.max_model_len or 4096, 1, tp)
    return num_gpu_blocks(dmap, model, engine.block_size_tokens, cpu.memory_bytes)
