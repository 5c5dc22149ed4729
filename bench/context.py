"""What every scenario gets: the size switch and where its logs go."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Context:
    quick: bool
    log_dir: Path  # bench-results/logs/<scenario>
    # A repetition (the second or third of a full run): only the parts behind judged figures
    # run, without the baselines, DBOS and the figures that have no target.
    judged_only: bool = False

    def size(self, full: int, quick: int | None = None) -> int:
        """`full`, or about a fifth of it (or `quick`) for a smoke run."""
        if not self.quick:
            return full
        return quick if quick is not None else max(1, round(full / 5))

    def logs(self, part: str) -> Path:
        path = self.log_dir / part
        path.mkdir(parents=True, exist_ok=True)
        return path
