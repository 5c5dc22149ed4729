"""deploy/k8s/base/prometheusrule.yaml is the PrometheusRule form of the unit-tested alert
rules, deploy/prometheus/alerts.yaml. `python -m tests.rules_manifest` writes it again;
tests/test_deploy.py checks the two are equal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
MANIFEST = ROOT / "deploy" / "k8s" / "base" / "prometheusrule.yaml"
HEADER = ("# Generated from deploy/prometheus/alerts.yaml (the unit-tested rules) by\n"
          "# `python -m tests.rules_manifest`; tests/test_deploy.py keeps the two equal.\n")


class _Dumper(yaml.SafeDumper):
    """Indented lists, and multi-line strings (PromQL) as literal blocks."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> Any:
        return super().increase_indent(flow, False)


def _string(dumper: yaml.SafeDumper, value: str) -> Any:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def manifest() -> dict[str, Any]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "assistant-worker"}, "spec": {"groups": groups}}


def render() -> str:
    return HEADER + yaml.dump(manifest(), Dumper=_Dumper, sort_keys=False, width=100)


if __name__ == "__main__":
    MANIFEST.write_text(render())
    print(f"wrote {MANIFEST.relative_to(ROOT)}")
