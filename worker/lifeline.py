"""A worker process dies with its parent, so that a SIGKILLed `assistant-worker run` (a
pod's process group killed, honcho's SIGKILL after its grace) leaves no Dramatiq process
running: the Dramatiq processes live in a session of their own (see worker/cli.py), out of
reach of a signal to the parent's process group."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

# Looked up once in the parent: the hook after fork only calls it (no loading after a fork).
_prctl: Any = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent() -> None:
    """SIGKILL this process when the thread that started it exits (Linux; elsewhere nothing).
    Safe as a `preexec_fn`: one system call."""
    if _prctl is not None and _prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")


def die_with_dramatiq_main() -> None:
    """In a Dramatiq worker process: die with the Dramatiq main process, and at once if it
    is already gone (it died between the fork and this call)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return  # not a process Dramatiq started (imported by something else)
    die_with_parent()
    if os.getppid() != parent.pid:
        os.kill(os.getpid(), signal.SIGKILL)
