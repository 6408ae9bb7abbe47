"""The `clustersim` command: subcommands are registered by their host modules.

Importing this module (and `clustersim --help`) loads only argparse and the commands' argument
definitions; a command imports what it runs when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from cluster.commands import replay, run, show


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clustersim", description="Simulate LLM-inference GPU clusters.")
    sub = parser.add_subparsers(dest="command", required=True)
    replay_parser = sub.add_parser("replay", help="replay a trace or synthetic workload offline",
                                   description="Replay a trace or a synthetic workload offline.")
    replay.add_arguments(replay_parser)
    replay_parser.set_defaults(func=lambda args: replay.run_from_args(args, "clustersim replay"))
    show.add_parser(sub)
    run.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # clustersim's models use no pydantic plugin; looking for plugins scans every installed
    # distribution's entry points (about 40 ms with Ray installed). Set the variable to "" to keep them.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
