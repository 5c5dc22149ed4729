"""`assistant-worker run` (the Procfile's worker line) as a real process tree, for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def worker_process(env: dict[str, str], stderr: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Start the worker with `env` over this process's environment; SIGTERM it at the end
    and check that it stopped cleanly (exit code 0)."""
    binary = Path(sys.executable).parent / "assistant-worker"
    with open(stderr or os.devnull, "wb") as err:
        proc = subprocess.Popen([str(binary), "run"], env={**os.environ, **env},
                                stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
    assert code == 0, f"the worker exited with {code}"
