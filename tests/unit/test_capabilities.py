"""The capability store on real Redis: what one worker learns the fleet knows, until the
TTL makes it try again; settings force a capability and nothing is learnt then."""

from __future__ import annotations

import time

import redis

from tests.unit.harness import FakeClock
from worker import keys
from worker.capabilities import CACHE_SECONDS, Capability, CapabilityStore
from worker.settings import Settings

BASE = "http://api.example/v1"
MULTI = Capability.MULTI_MESSAGE_RUNS


def store(client: redis.Redis | None, clock: FakeClock, ttl: float = 60.0, **modes: str) -> CapabilityStore:
    forced = {Capability(name): mode for name, mode in modes.items()}
    return CapabilityStore(client, BASE, forced, ttl, clock=clock)  # type: ignore[arg-type]  # modes from strings


def test_what_one_worker_learns_the_fleet_knows(redis_client: redis.Redis, clock: FakeClock) -> None:
    one, other = store(redis_client, clock), store(redis_client, clock)
    assert one.supports(MULTI) and other.supports(MULTI)  # assumed until learnt
    one.learn(MULTI, False, "two creates answered HTTP 500")
    assert not one.supports(MULTI)
    assert other.supports(MULTI)  # its cached read, for a few seconds
    clock.advance(CACHE_SECONDS + 0.1)
    assert not other.supports(MULTI)
    assert "learnt: two creates answered HTTP 500" in other.get(MULTI).describe(True)
    ttl_ms = redis_client.pttl(keys.capability(BASE, MULTI.value))
    assert 0 < ttl_ms <= 60_000


def test_a_learnt_capability_is_tried_again_after_its_ttl(redis_client: redis.Redis, clock: FakeClock) -> None:
    known = store(redis_client, clock, ttl=0.2)
    known.learn(MULTI, False, "refused")
    deadline = time.monotonic() + 5
    while redis_client.exists(keys.capability(BASE, MULTI.value)) and time.monotonic() < deadline:
        time.sleep(0.02)
    clock.advance(CACHE_SECONDS + 0.1)
    assert known.supports(MULTI)


def test_a_forced_capability_is_never_learnt(redis_client: redis.Redis, clock: FakeClock) -> None:
    on = store(redis_client, clock, additional_messages="on")
    off = store(redis_client, clock, additional_messages="off")
    on.learn(MULTI, False, "refused")
    assert on.supports(MULTI) and not off.supports(MULTI)
    assert not redis_client.exists(keys.capability(BASE, MULTI.value))
    assert on.listing()[0] == "additional_messages=on (set)"


def test_without_redis_it_is_learnt_in_the_process_only(clock: FakeClock) -> None:
    known = store(None, clock)
    known.learn(Capability.THREAD_AND_RUN, False, "404")
    assert not known.supports(Capability.THREAD_AND_RUN) and known.supports(MULTI)


def test_an_unreadable_record_is_learnt_again(redis_client: redis.Redis, clock: FakeClock) -> None:
    redis_client.set(keys.capability(BASE, MULTI.value), "not json")
    assert store(redis_client, clock).get(MULTI).value is None


def test_the_settings_name_each_capability() -> None:
    settings = Settings(additional_messages="off", create_thread_and_run="on")
    known = CapabilityStore.from_settings(settings, None)
    assert known.modes[MULTI] == "off" and known.modes[Capability.THREAD_AND_RUN] == "on"
    assert known.modes[Capability.LIST_RESPONSES] == "auto"
    assert "list_responses=no (assumed)" in known.listing()
    assert known.base_url == settings.api_base_url
