"""A short chaos run in the suite: pods SIGKILLed under load and faults; nothing lost,
duplicated, reordered or stuck. `python -m tests.chaos` runs the long version."""

from __future__ import annotations

from tests import chaos


def test_chaos_short_run_keeps_the_invariant() -> None:
    result = chaos.run(_args("--duration", "25", "--kill-every", "5", "--lease-seconds", "5",
                             "--rate", "10", "--pods", "2", "--conversations", "60"))
    chaos.print_table(result)
    assert result["events"] >= 200 and result["kills"] >= 3
    assert chaos.violations(result) == 0, result
    assert result["longest_wait_after_kill_s"] is not None
    assert result["longest_wait_after_kill_s"] < 5 + 15, result


def _args(*argv: str):  # type: ignore[no-untyped-def]
    import argparse

    parser = argparse.ArgumentParser()
    chaos.add_arguments(parser)
    return parser.parse_args(argv)
