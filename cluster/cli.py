"""The `clustersim` command: subcommands are registered by their host modules.

Importing this module (and `clustersim --help`) loads only argparse and the commands' argument
definitions; a command imports what it runs when it runs.

What every command shares is handled here: an unknown flag is reported with the usage of the
command it was given to (not the top-level usage), Ctrl-C outside a run exits 130 with one line,
and output cut short by a closed pipe (`clustersim cluster show ... | head`) exits quietly.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from cluster.commands import profile, replay, run, show
from cluster.commands.guard import EXIT_INTERRUPTED

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader went away


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clustersim", description="Simulate LLM-inference GPU clusters.")
    sub = parser.add_subparsers(dest="command", required=True)
    replay_parser = sub.add_parser("replay", help="replay a trace or synthetic workload offline",
                                   description="Replay a trace or a synthetic workload offline.")
    replay.add_arguments(replay_parser)
    replay_parser.set_defaults(func=lambda args: replay.run_from_args(args, "clustersim replay"))
    show.add_parser(sub)
    run.add_parser(sub)
    profile.add_parser(sub)
    return parser


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the command `args` selected, following subcommands down."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and action.dest is not argparse.SUPPRESS:
            chosen = getattr(args, action.dest, None)
            if chosen in action.choices:
                return _command_parser(action.choices[chosen], args)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # clustersim's models use no pydantic plugin; looking for plugins scans every installed
    # distribution's entry points (about 40 ms with Ray installed). Set the variable to "" to keep them.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _command_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        code: int = args.func(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away: send whatever is still buffered nowhere, so the interpreter's
        # own flush at exit does not fail again (Python docs, "Note on SIGPIPE")
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
