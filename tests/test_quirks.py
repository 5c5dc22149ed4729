"""The quirk runner (tests/quirks.py) at small sizes: its schedule, its presets, and two real
runs: a plain one answered in full, and a worker that stops at once on a refused key."""

from __future__ import annotations

import argparse

import pytest

from tests import quirks


def args(*argv: str) -> argparse.Namespace:
    return quirks.build_parser().parse_args(list(argv))


def test_the_schedule_keeps_each_conversations_order_and_spreads_the_load() -> None:
    events, spread = quirks.schedule(args("--conversations", "7", "--messages", "4"))
    assert len(events) == 28 and len({text for _, text in events}) == 28, "every text its own"
    assert spread == 4 * quirks.GAP_SECONDS
    by_conversation: dict[str, list[int]] = {}
    for n, (cid, _) in enumerate(events):
        by_conversation.setdefault(cid, []).append(n)
    assert sorted(by_conversation) == [f"q{c}" for c in range(7)]
    assert all(len(ns) == 4 for ns in by_conversation.values())
    assert [cid for cid, _ in events] != sorted(cid for cid, _ in events), "conversations interleave"
    _, outage = quirks.schedule(args("--case", "outage"))
    assert outage == 180
    _, given = quirks.schedule(args("--case", "outage", "--duration", "60"))
    assert given == 60


def test_the_presets_set_their_emulator_fields() -> None:
    assert quirks.emulator_switches(args("--case", "multi-message"))["multi_message_500"] is True
    refused = quirks.emulator_switches(args("--case", "wrong-key", "--fault-429", "0"))
    assert refused["rejected_keys"] == [quirks.WRONG_KEY] and refused["fault_429"] == 0
    assert quirks.emulator_switches(args("--set", "run_seconds=0.5"))["run_seconds"] == "0.5"
    with pytest.raises(SystemExit, match="no emulator field bogus"):
        quirks.emulator_switches(args("--set", "bogus=1"))


def test_a_plain_run_answers_every_event_once_in_order() -> None:
    report = quirks.run_case("plain", conversations=3, messages=2, duration=2.0, deadline=120)
    assert report.events == 6 and report.all_answered, report
    assert report.violations() == 0 and report.entry_types == {"run.completed": report.entries}, report
    assert report.worker_exit_code == 0 and report.worker_stderr is None, report
    assert report.wall_s > 0


def test_a_refused_key_stops_the_worker_and_the_report_says_so() -> None:
    report = quirks.run_case_in_subprocess(["--case", "wrong-key"])
    assert report.worker_exit_code == 78 and report.events == 0, report
    assert report.worker_stderr is not None and report.worker_stderr.startswith(
        "assistant-worker: OPENAI_API_KEY is refused"), report


def test_a_server_refusing_several_messages_per_run_gets_them_one_at_a_time() -> None:
    """Every conversation's three messages arrive together, so runs would carry several:
    the server refuses those (HTTP 500), the worker learns it and appends one at a time."""
    report = quirks.run_case("multi-message", conversations=10, messages=3, duration=1.0, deadline=120)
    assert report.all_answered and report.violations() == 0, report
    assert report.entry_types == {"run.completed": report.entries}, report
    assert report.appended_twice == 0 and report.batched_entries > 0, report
    assert report.faults_injected["quirks"]["multi_message_500"] >= 2, report  # the quirk was met


def test_a_key_revoked_while_running_fails_the_next_events_with_the_api_s_code() -> None:
    report = quirks.run_case("revoked-key", conversations=2, messages=1, duration=1.0, deadline=60,
                             revoked_events=3)
    assert report.entry_types == {"run.completed": 2}, report
    assert report.revoked_codes == {"run.failed/invalid_api_key": 3}, report
