"""`python -m bench.dbos_baseline --processes N`: N baseline processes (bench.dbos_baseline.app),
process i with the stable executor id `<prefix>-i` (a process restarted under it recovers its
workflows). SIGTERM / SIGINT are passed on to them; exits when they have."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dbos_baseline")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--executor-prefix", default="bench-dbos")
    args = parser.parse_args()
    children = [subprocess.Popen([sys.executable, "-m", "bench.dbos_baseline.app"],
                                 env={**os.environ, "DBOS_EXECUTOR_ID": f"{args.executor_prefix}-{index}"})
                for index in range(args.processes)]

    def forward(signum: int, frame: object) -> None:
        for child in children:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return max(codes, default=0)


if __name__ == "__main__":
    sys.exit(main())
