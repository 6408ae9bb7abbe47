"""`clustersim cluster show FILE [FILE...]`: print nodes, cards, mode, max split count, vGPUs and free capacity.

FILE is a mock accelerator TOML (Backend.AI schema, `configs/accelerator/*.toml`) with two optional
clustersim tables:

    [node]
    name = "gpu-a"                 # default: the file stem
    [virtualization]
    mode = "mig"                   # default | mig | hami-core | cambricon-dynamic-smlu | cambricon-env-share | fractional
    profiles = ["3g.40gb", "3g.40gb", "1g.10gb"]   # other keys per mode: see cluster/hardware/virtualization.py

Without `[virtualization]` the mode follows the file: MIG slices -> mig, fractional plugin_config ->
fractional, else default. `--mode`/`--set key=value` override it from the command line.
Bad input prints one line `error: FILE: field: message` and exits 2 (no traceback).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO, get_args

if TYPE_CHECKING:
    from cluster.hardware.node import Node


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `cluster show` under the top-level CLI's subparsers."""
    cluster = subparsers.add_parser("cluster", help="inspect modelled GPU nodes")
    sub = cluster.add_subparsers(dest="cluster_cmd", required=True)
    show = sub.add_parser("show", help="print nodes, cards, virtualization mode, vGPUs and free capacity")
    show.add_argument("files", nargs="+", metavar="FILE", help="accelerator TOML (optionally with [virtualization])")
    show.add_argument("--mode", help="override the virtualization mode")
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="virtualization setting (repeatable; lists comma-separated)")
    show.set_defaults(func=run_show)


def _override(args: argparse.Namespace, node: Node) -> Node:
    from pydantic import TypeAdapter, ValidationError

    from cluster.hardware.catalog import summarize_validation_error
    from cluster.hardware.node import Node
    from cluster.hardware.virtualization import ModeName, VirtualizationConfig

    if not args.mode and not args.set:
        return node
    raw: dict[str, object] = {"mode": args.mode or node.mode.mode}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        raw[key.strip()] = [v.strip() for v in value.split(",")] if "," in value or key == "profiles" else value
    modes = get_args(ModeName)
    if raw["mode"] not in modes:
        flag = "--mode" if raw["mode"] == args.mode else "--set mode"
        raise ValueError(f"{flag}: {raw['mode']!r} is not a virtualization mode ({', '.join(modes)})")
    try:
        cfg: VirtualizationConfig = TypeAdapter(VirtualizationConfig).validate_python(raw)
    except ValidationError as exc:
        raise ValueError(f"--set {summarize_validation_error(exc)}") from None
    return Node.build(node.name, node.acc, cfg)


def render(node: Node, out: TextIO) -> None:
    """Write one node as a table."""
    from cluster.hardware.accelerator import format_slot, resource_slots
    from cluster.hardware.sizes import format_binary_size

    slots = resource_slots(node.acc)
    shown = ", ".join(f"{k}={format_slot(node.acc, k, v)}" for k, v in slots.items())
    out.write(f"node {node.name}  mode={node.mode.mode}  status={node.status}  slots: {shown}\n")
    head = f"  {'card':>4}  {'model':<26} {'numa':>4}  {'mode':<22} {'max split':>9}  {'vGPUs':>5}  {'free mem':>11}  {'free SM':>7}"
    out.write(head + "\n")
    vgpus = node.vgpus()
    for card in node.cards:
        mine = [(v, h) for v, h in vgpus if v.card_index == card.index]
        free_mem, free_sm = node.free_capacity(card.index)
        split = node.max_split(card.index)
        split_text = f"{split / 100:.2f}fGPU" if node.mode.mode == "fractional" else str(split)
        out.write(f"  {card.index:>4}  {card.gpu.name:<26} {card.numa:>4}  {node.card_mode(card.index):<22} "
                  f"{split_text:>9}  {len(mine):>5}  {format_binary_size(free_mem):>11}  "
                  f"{free_sm:>7.2f}\n")
        for v, holder in mine:
            label = v.profile or v.isolation
            out.write(f"        - {v.vgpu_id:<34} {label:<12} {format_binary_size(v.memory_bytes):>11}  "
                      f"SM {v.sm_fraction:.3f}  BW {v.bandwidth_fraction:.3f}  {v.isolation:<11} "
                      f"{holder or 'free'}\n")


def run_show(args: argparse.Namespace) -> int:
    """Handler of `cluster show`; returns the exit status."""
    from cluster.hardware.node import load_node

    for path in args.files:
        try:
            node = _override(args, load_node(path))
        except ValueError as exc:
            msg = str(exc)
            sys.stderr.write(f"error: {msg if msg.startswith(str(path)) else f'{path}: {msg}'}\n")
            return 2
        render(node, sys.stdout)
    return 0
