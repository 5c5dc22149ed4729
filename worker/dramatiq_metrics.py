"""Dramatiq's own message metrics (dramatiq_messages_total, ...) on the pod's /metrics.

Imported only under `assistant-worker run`: importing Dramatiq's Prometheus middleware
creates its database folder (from `dramatiq_prom_db`, which the command points at the
pod's multiprocess folder), so nothing else, the producers least of all, may import it.
"""

from __future__ import annotations

from collections.abc import Callable

from dramatiq.middleware.prometheus import Prometheus


class DramatiqMetrics(Prometheus):
    """Writes to the same multiprocess folder as our metrics and leaves serving them to our
    /metrics, instead of starting Dramatiq's own HTTP server (on 9191, METRICS_PORT's default)."""

    @property
    def forks(self) -> list[Callable[[], int]]:
        return []
