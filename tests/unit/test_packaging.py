"""What a chat backend installs and imports: producers alone, and the scripts in a wheel."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]


def test_import_producers_brings_neither_the_worker_nor_its_metrics() -> None:
    """A backend that only sends messages pays for nothing else (a fresh interpreter).
    Without prometheus_client imported, no metric can be registered in its registry."""
    probe = ("import sys, producers\n"
             "print(sorted(m for m in ('dramatiq', 'openai', 'prometheus_client', 'structlog',"
             " 'worker.conversation', 'worker.backends', 'worker.metrics') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", f"import producers imported {out.stdout.strip()}"


@pytest.mark.timeout(300)
def test_the_built_wheel_ships_the_lua_scripts_and_they_run(tmp_path: Path, redis_client: redis.Redis) -> None:
    """Build the wheel, install it (no dependencies) in a fresh venv, read a script through
    the installed package, and run that script on Redis."""
    source = tmp_path / "source"  # a copy: building writes build/ beside the sources
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in tracked.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(source)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("assistant_worker-*.whl")
    assert "worker/store/lua/publish.lua" in zipfile.ZipFile(wheel).namelist()
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--quiet", str(wheel)],
                   check=True, capture_output=True)
    read = ("import json; from worker.store import scripts; s = scripts.source('accept'); "
            "print(json.dumps([s.text, s.keys, s.args, scripts.__file__]))")
    out = subprocess.run([str(python), "-c", read], capture_output=True, text=True, check=True, cwd=tmp_path)
    text, script_keys, args, location = json.loads(out.stdout)
    assert str(env_dir) in location, "read from the installed package, not the checkout"
    accept = redis_client.register_script(text)
    values = {"conversation_id": "c1", "event": "{}", "dedup_ttl": 60, "now": 1.0}
    names = {"dedup": "w:dedup", "inbox": "w:inbox", "schedule": "w:schedule", "wake": "w:wake"}
    assert accept(keys=[names[k] for k in script_keys], args=[values[a] for a in args]) == 1
    assert accept(keys=[names[k] for k in script_keys], args=[values[a] for a in args]) == 0
    assert redis_client.llen("w:inbox") == 1
