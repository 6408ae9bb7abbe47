"""The Ray runtime on a multi-node `ray.cluster_utils.Cluster` bound to 127.0.0.1 (issue 14): the driver
joins the address it was given (loopback included), shards land on different nodes and the report
stays byte-identical to Local; an unreachable address, a killed shard and a lost channel each end
the run within seconds with one line. Marked slow; CI runs one multi-node test (byte identity), the
other multi-node ones are marked soak (`make soak`)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.report.build import build_report
from cluster.runner import run_world
from tests.scenario_helpers import BIN, ROOT, scenario, world_of, write

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loopback_cluster() -> Iterator[str]:
    """A head and two worker nodes on 127.0.0.1; this process joins it as the driver."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from cluster.runtime.ray import _join_ray

    os.environ.pop("RAY_ADDRESS", None)
    ray.shutdown()  # a driver of another cluster (an earlier test) lets go first
    args = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 80_000_000}
    cluster = Cluster(initialize_head=True, head_node_args={**args, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(**args)
    cluster.wait_for_nodes()
    try:
        _join_ray(ray, cluster.address)
        yield str(cluster.address)
    finally:
        ray.shutdown()
        cluster.shutdown()


def _report(tmp_path: Path, sc: dict[str, Any], runtime: str, **kw: Any) -> tuple[bytes, Any]:
    world = world_of(tmp_path, sc)
    result, control = run_world(world, runtime, **kw)  # type: ignore[arg-type]
    return json.dumps(build_report(world, result, control), sort_keys=True).encode(), result


def test_three_loopback_nodes_give_the_local_report(loopback_cluster: str, tmp_path: Path) -> None:
    sc = scenario(faults=[{"at_s": 0.5, "kill_node": "n-1"}])
    sc["deployments"][0]["migration_limit"] = 2
    local, _ = _report(tmp_path, sc, "local")
    ray, result = _report(tmp_path, sc, "ray", shards=3, address=loopback_cluster)
    assert ray == local
    assert len(set(result.extra["shard_nodes"])) == 3, "one shard per node"


@pytest.mark.soak  # CI runs one multi-node test (the first); `make soak` runs these
def test_the_cli_joins_a_loopback_address(loopback_cluster: str, tmp_path: Path) -> None:
    path = write(tmp_path, scenario())
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = time.monotonic()
    done = subprocess.run([str(BIN / "clustersim"), "run", str(path), "--no-progress", "--runtime", "ray",
                           "--shards", "2", "--ray-address", loopback_cluster, "--output-dir", str(tmp_path / "o")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert time.monotonic() - started < 120


def test_an_unreachable_address_fails_fast_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, scenario())
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = time.monotonic()
    done = subprocess.run([str(BIN / "clustersim"), "run", str(path), "--runtime", "ray", "--shards", "2",
                           "--ray-address", "127.0.0.1:1"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and time.monotonic() - started < 30
    assert done.stderr.count("\n") == 1 and "cannot reach Ray at 127.0.0.1:1" in done.stderr


def _long() -> dict[str, Any]:
    sc = scenario()
    sc["workload"]["synthetic"].update(request_count=4000, request_rate=200)
    return sc


@pytest.mark.soak  # CI runs one multi-node test (the first); `make soak` runs these
def test_a_killed_shard_ends_the_run_with_one_line(loopback_cluster: str, tmp_path: Path) -> None:
    import ray

    from cluster.runtime.ray import RuntimeSetupError

    killed: list[float] = []
    mid_run = threading.Event()
    done = {"n": 0}

    def count(_: Any) -> None:
        done["n"] += 1
        if done["n"] == 300:
            mid_run.set()

    def kill_one() -> None:
        if mid_run.wait(120):
            ray.kill(ray.get_actor(f"clustersim-{os.getpid()}-shard-1"))
            killed.append(time.monotonic())

    killer = threading.Thread(target=kill_one)
    killer.start()
    try:
        with pytest.raises(RuntimeSetupError, match=r"node shard 1 was lost in the window ending at simulated t=") \
                as err:
            _report(tmp_path, _long(), "ray", shards=3, address=loopback_cluster, on_done=count)
    finally:
        mid_run.set()
    ended = time.monotonic()
    killer.join()
    assert killed and ended - killed[0] < 10.0
    assert "\n" not in str(err.value)


@pytest.mark.soak  # CI runs one multi-node test (the first); `make soak` runs these
def test_a_lost_channel_ends_the_run_with_one_line(loopback_cluster: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import zmq

    import cluster.runtime.ray as rt

    sends = {"n": 0}
    real_send = zmq.Socket.send

    def lossy_send(self: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
        sends["n"] += 1
        if sends["n"] > 50 and data != b"stop":  # the channel goes dead: nothing reaches the shards
            return None
        return real_send(self, data, *args, **kwargs)

    monkeypatch.setattr(zmq.Socket, "send", lossy_send)
    monkeypatch.setattr(rt, "REPLY_TIMEOUT_S", 3.0)
    started = time.monotonic()
    with pytest.raises(rt.RuntimeSetupError, match=r"ZMQ channel lost") as err:
        _report(tmp_path, _long(), "ray", shards=2, address=loopback_cluster)
    assert time.monotonic() - started < 60 and "\n" not in str(err.value)
