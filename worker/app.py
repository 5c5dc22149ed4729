"""The module Dramatiq's command line loads: `dramatiq worker.app`."""

from __future__ import annotations

from worker import lifeline
from worker.logs import configure_logging
from worker.runtime import build_runtime
from worker.settings import get_settings

lifeline.die_with_dramatiq_main()  # no worker process outlives a killed pod
settings = get_settings()
configure_logging(settings)
runtime = build_runtime(settings)
broker = runtime.broker
