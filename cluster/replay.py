"""`python -m cluster.replay`: the replay command as a module (the flags of `clustersim replay`)."""

from __future__ import annotations

import sys

from cluster.commands.replay import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m cluster.replay"))
