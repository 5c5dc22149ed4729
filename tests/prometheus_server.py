"""A real Prometheus server (Debian's `prometheus` package) on loopback, for the tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Self

from tests.conftest import free_port, wait_until

INSTALL_HINT = "prometheus is not installed: `make prometheus` (Debian's package) installs it"


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name}: {INSTALL_HINT}")
    return path


class PrometheusServer:
    """Scrapes `targets` (host:port) every second; `query` runs PromQL through its HTTP API."""

    def __init__(self, folder: Path, targets: list[str]) -> None:
        self.folder = folder
        self.port = free_port()
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": [{"job_name": "assistant-worker",
                                      "static_configs": [{"targets": targets}]}]}
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        command = binary("prometheus")  # before the log is opened: a missing binary leaks nothing
        self._log = open(folder / "prometheus.log", "wb")  # noqa: SIM115 - Prometheus's log, open until close()
        self.proc = subprocess.Popen(
            [command, f"--config.file={folder / 'prometheus.yml'}",
             f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_until(self._ready, 30, 0.1, what="prometheus ready")
        except BaseException:
            self.close()
            raise

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited: {(self.folder / 'prometheus.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def _api(self, endpoint: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/{endpoint}?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=30) as reply:
            body = json.load(reply)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self._api("query", {"query": expr})

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return self._api("query_range", {"query": expr, "start": start, "end": end, "step": step})

    def scalar(self, expr: str) -> float | None:
        """The value of a one-series result, or None when there is none yet."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def targets_up(self) -> bool:
        return self.scalar("min(up)") == 1.0

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
