"""Running a built world on a runtime: the Local runtime, or node shards in Ray actors (a host module).

    world = build_world(load_scenario("smoke.yaml"))
    result, control = run_world(world, "ray", shards=2)
    report = build_report(world, result, control)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from actors.engine.records import RequestRecord
from cluster.control.host import ControlHost
from cluster.runtime.local import run_local
from cluster.runtime.shard import RunResult
from cluster.scenario.world import World
from cluster.sim.clock import EventLoop


def run_world(world: World, runtime: Literal["local", "ray"] = "local", shards: int = 1, *,
              on_done: Callable[[RequestRecord], None] | None = None, address: str | None = None,
              channel: Literal["zmq", "ray"] = "zmq",
              on_loop: Callable[[EventLoop], None] | None = None) -> tuple[RunResult, ControlHost]:
    """Run a world; on Ray every node of the cluster is given to a shard, so workers added during
    the run can land anywhere. Ray is imported only for the Ray runtime. `on_loop`: the Local
    runtime's event loop, before it runs (see `run_local`)."""
    if runtime == "local":
        return run_local(world.setup, on_done, on_loop=on_loop)
    from cluster.runtime.ray import run_ray

    return run_ray(world.setup, world.node_of_rank, shards, on_done=on_done, address=address, channel=channel,
                   nodes=[n.name for n in world.nodes])
