"""Deployment, checked by machines: the Kustomize manifests render (kubectl's Kustomize) and
validate offline against Kubernetes' schemas (kubernetes-validate) and the CRD schemas of
ServiceMonitor, PrometheusRule, ScaledObject and TriggerAuthentication (@kubernetes-models,
through Node); YAML is linted (yamllint), the Dockerfile too (hadolint); and the manifests,
the Dockerfile and the Procfile agree with the code."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from producers import Producer
from tests import rules_manifest
from tests.conftest import free_port, wait_until
from worker import keys
from worker.http import make_app
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ["base", "overlays/example", "overlays/without-keda"]
KUBERNETES_VERSION = "1.37.0"  # a current release (kubernetes-validate's newest schemas)
CUSTOM = {"monitoring.coreos.com/v1", "keda.sh/v1alpha1"}
VALIDATOR = ROOT / "deploy" / "validate"
SETTINGS = {name.upper() for name in Settings.model_fields}


def tool(name: str) -> str:
    """A validation tool from the venv (`make test` installs them) or the PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: `make test` installs the deployment tools")
    return found


def render(overlay: str) -> list[dict[str, Any]]:
    done = subprocess.run([tool("kubectl"), "kustomize", str(K8S / overlay)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


@pytest.fixture(scope="module")
def example() -> list[dict[str, Any]]:
    return render("overlays/example")


# --- rendering and schemas ----------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_manifests_render_and_match_the_kubernetes_schemas(overlay: str) -> None:
    docs = render(overlay)
    kinds = sorted(d["kind"] for d in docs)
    expected = {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy",
                "ServiceMonitor", "PrometheusRule"}
    assert expected <= set(kinds), kinds
    autoscaler = {"base": set(), "overlays/example": {"ScaledObject", "TriggerAuthentication"},
                  "overlays/without-keda": {"HorizontalPodAutoscaler"}}[overlay]
    assert set(kinds) == expected | autoscaler
    for doc in docs:
        if doc["apiVersion"] not in CUSTOM:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_catches_a_broken_manifest(example: list[dict[str, Any]]) -> None:
    broken = json.loads(json.dumps(one(example, "Deployment")))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "metrics"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def validate_custom(objects: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    if not (VALIDATOR / "node_modules").exists():
        pytest.fail("deploy/validate/node_modules is missing: `make test` runs npm ci there")
    return subprocess.run(["node", str(VALIDATOR / "validate-crds.mjs")], input=json.dumps(objects),
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_match_their_crd_schemas(overlay: str) -> None:
    custom = [d for d in render(overlay) if d["apiVersion"] in CUSTOM]
    done = validate_custom(custom)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("\nok ") + done.stdout.startswith("ok ") == len(custom)


def test_the_crd_check_catches_a_broken_scaled_object(example: list[dict[str, Any]]) -> None:
    broken = json.loads(json.dumps(one(example, "ScaledObject")))
    del broken["spec"]["scaleTargetRef"]
    done = validate_custom([broken])
    assert done.returncode == 1 and "INVALID" in done.stdout


def test_yaml_is_linted() -> None:
    done = subprocess.run([tool("yamllint"), "--strict", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dockerfile_is_linted() -> None:
    done = subprocess.run([tool("hadolint"), "deploy/Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# --- the manifests agree with the code ----------------------------------------------------

def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def settings_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    return one(docs, "ConfigMap")["data"]


def test_the_deployment_runs_the_procfile_worker_line_with_its_settings(example: list[dict[str, Any]]) -> None:
    deployment = one(example, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == shlex.split(procfile()["worker"])
    env = settings_env(example)
    # Every setting given to the pod is one the worker reads (or prometheus-client's folder).
    names = set(env) | {e["name"] for e in container["env"]}
    assert names <= SETTINGS | {"PROMETHEUS_MULTIPROC_DIR"}, names - SETTINGS
    assert {e["name"] for e in container["env"]} == {"OPENAI_API_KEY", "REDIS_URL"}
    assert all("secretKeyRef" in e["valueFrom"] for e in container["env"])
    assert container["envFrom"] == [{"configMapRef": {"name": one(example, "ConfigMap")["metadata"]["name"]}}]
    # The metrics port is the worker's METRICS_PORT, probes hit the paths it serves.
    (port,) = container["ports"]
    assert port["containerPort"] == int(env["METRICS_PORT"]) == Settings().metrics_port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    app = make_app(Settings(redis_url="redis://127.0.0.1:1/0"), None)

    def status_of(path: str) -> str:
        statuses: list[str] = []
        app({"PATH_INFO": path}, lambda status, headers: statuses.append(status))
        return statuses[0]

    for path in ("/healthz", "/readyz", "/metrics"):
        assert not status_of(path).startswith("404"), path
    # SIGTERM: the worker's own shutdown fits in the grace period.
    assert pod["terminationGracePeriodSeconds"] >= float(env["WORKER_SHUTDOWN_SECONDS"]) + 10
    # Non-root, read-only root, the multiprocess folder a writable volume.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert env["PROMETHEUS_MULTIPROC_DIR"] in mounts and "/tmp" in mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert all("emptyDir" in volumes[name] for name in mounts.values())


def test_the_metrics_service_and_monitor_reach_the_pods(example: list[dict[str, Any]]) -> None:
    deployment, service = one(example, "Deployment"), one(example, "Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    monitor = one(example, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        spec = one(example, kind)["spec"]
        selector = spec.get("selector") or spec["podSelector"]
        assert selector["matchLabels"].items() <= labels.items(), kind


def test_keda_scales_on_the_dramatiq_queue_the_worker_consumes(example: list[dict[str, Any]]) -> None:
    scaled = one(example, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == one(example, "Deployment")["metadata"]["name"]
    (redis_trigger,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "redis"]
    assert redis_trigger["metadata"]["listName"] == keys.dramatiq_queue(settings_env(example)["WORKER_QUEUE"])


def test_the_prometheus_rule_is_the_unit_tested_rules() -> None:
    assert yaml.safe_load(rules_manifest.MANIFEST.read_text()) == rules_manifest.manifest()


def test_the_network_policy_allows_only_dns_redis_the_api_and_the_scrape(example: list[dict[str, Any]]) -> None:
    spec = one(example, "NetworkPolicy")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    egress_ports = sorted(p["port"] for rule in spec["egress"] for p in rule["ports"])
    assert egress_ports == [53, 53, 443, 6379]
    assert [p["port"] for rule in spec["ingress"] for p in rule["ports"]] == ["metrics"]


def test_the_dockerfile_installs_what_the_readme_installs_and_starts_the_worker() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    readme = (ROOT / "README.md").read_text()
    (installed,) = re.findall(r"^RUN pip install --no-cache-dir (\S+)$", dockerfile, re.MULTILINE)
    assert f"pip install {installed}`" in readme  # the README's production install
    assert installed == "."  # this project, with pyproject.toml's dependencies
    (entry,) = re.findall(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.MULTILINE)
    assert json.loads(entry) == shlex.split(procfile()["worker"])
    assert re.search(r"^USER 10001", dockerfile, re.MULTILINE) and f"EXPOSE {Settings().metrics_port}" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text()
    copied = re.findall(r"^COPY (?!--from)(\S+)", dockerfile, re.MULTILINE)
    assert all(f"!{path.rstrip('/')}" in ignored.replace("/\n", "\n") for path in copied), copied


# --- the Procfile under honcho --------------------------------------------------------------

def test_every_procfile_line_runs_together_under_honcho(tmp_path: Path) -> None:
    """`honcho start` (what `make stack` runs): Redis, the emulator and the worker come up
    together, a message is answered, and SIGTERM stops them all."""
    assert set(procfile()) == {"worker", "emulator", "redis"}
    redis_port, emulator_port = free_port(), free_port()
    env_file = tmp_path / "stack.env"
    env_file.write_text("\n".join([
        f"REDIS_PORT={redis_port}", f"REDIS_URL=redis://127.0.0.1:{redis_port}/0",
        f"EMULATOR_PORT={emulator_port}", f"OPENAI_BASE_URL=http://127.0.0.1:{emulator_port}/v1",
        "OPENAI_API_KEY=sk-local", "ASSISTANT_ID=asst_default", f"METRICS_PORT={free_port()}",
        f"PROMETHEUS_MULTIPROC_DIR={tmp_path / 'prom'}", "LOG_LEVEL=WARNING"]) + "\n")
    honcho = subprocess.Popen([tool("honcho"), "-e", str(env_file), "-f", str(ROOT / "Procfile"),
                               "-d", str(ROOT), "start"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True, env=_clean_env())
    producer = Producer(Settings(redis_url=f"redis://127.0.0.1:{redis_port}/0"))
    try:
        wait_until(lambda: _accepts(producer), 30, 0.2, what="the stack's Redis")
        position = producer.outbound_position()
        event_id = producer.send_user_message("honcho-1", "hello from honcho")
        entry = producer.wait_for(event_id, position, timeout=60)
        assert entry is not None and entry["type"] == "run.completed"
    finally:
        producer.close()
        os.killpg(honcho.pid, signal.SIGTERM)
        output, _ = honcho.communicate(timeout=60)
    text = output.decode(errors="replace")
    for name in ("worker", "emulator", "redis"):
        assert re.search(rf"{name}\.1 started \(pid=\d+\)", text), text[-2000:]
    assert honcho.returncode is not None
    wait_until(lambda: not _group_alive(honcho.pid), 30, 0.2, what="every process of the stack to stop")


def _clean_env() -> dict[str, str]:
    """This environment without stack settings, with the venv's commands first on PATH
    (as `make stack` puts them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "OPENAI_"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _accepts(producer: Producer) -> bool:
    try:
        return bool(producer.redis.ping())
    except Exception:  # noqa: BLE001 - not up yet
        return False
