"""A short chaos run in the suite: pods SIGKILLed under load and faults; nothing lost,
duplicated, reordered or stuck. `python -m tests.chaos` runs the long version."""

from __future__ import annotations

import argparse

import pytest

from tests import chaos
from tests.stack import BACKENDS


@pytest.mark.parametrize("backend", BACKENDS)
def test_chaos_short_run_keeps_the_invariant(backend: str) -> None:
    result = chaos.run(_args("--duration", "25", "--kill-every", "5", "--lease-seconds", "5",
                             "--rate", "10", "--pods", "2", "--conversations", "60",
                             "--backend", backend))
    chaos.print_table(result)
    assert result["events"] >= 200 and result["kills"] >= 3
    assert chaos.violations(result) == 0, result
    # Only transient faults and retryable run failures are injected: every answer is a reply.
    assert set(result["entry_types"]) == {"run.completed"}, result
    assert result["longest_wait_after_kill_s"] is not None
    # A kill is recovered from when the dead pod's lease expires (5 s) or, when it died with a
    # batch's tools in hand, when the tools are dispatched again (TOOL_TIMEOUT_SECONDS + 10 s
    # after the first dispatch); then the run continues (1 s runs, polls <= 1 s apart, a few
    # faults' backoffs). Slower than that means recovery waits on something else.
    recovered_after = max(5, chaos.TOOL_TIMEOUT_SECONDS + 10)
    assert result["longest_wait_after_kill_s"] < recovered_after + 10, result


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    chaos.add_arguments(parser)
    return parser.parse_args(argv)
