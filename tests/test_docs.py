"""The README and the contract (docs/contract.md) stay true: every setting is documented,
the contract names only settings that exist and states their defaults as the code has them,
and neither document points outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_core import PydanticUndefined

from emulator.config import ENV_FIELDS as EMULATOR_ENV_FIELDS, EmulatorConfig
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README_PATH = ROOT / "README.md"
CONTRACT_PATH = ROOT / "docs" / "contract.md"
README = README_PATH.read_text()

# `NAME`, an environment variable as the documents write one.
ENV_NAME = re.compile(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`")
# `NAME` (default VALUE ...), VALUE optionally in backticks.
STATED_DEFAULT = re.compile(r"`([A-Z][A-Z0-9_]+)`\s*\(default\s+`?([^`\s,;)]+)`?")
# ${NAME:-default} in the Procfile.
PROCFILE_VAR = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::-([^}]*))?\}")
# os.environ["NAME"] / os.environ.get("NAME") in the worker's code.
ENVIRON_READ = re.compile(r"""os\.environ(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9_]*)["']""")
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def contract() -> str:
    return CONTRACT_PATH.read_text()


def setting_names() -> dict[str, str]:
    """Environment variable -> field name of every setting."""
    prefix = str(Settings.model_config.get("env_prefix") or "")
    return {(prefix + name).upper(): name for name in Settings.model_fields}


def setting_default(field: str) -> object:
    info = Settings.model_fields[field]
    value = info.get_default(call_default_factory=True)
    assert value is not PydanticUndefined, field
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def procfile_defaults() -> dict[str, str | None]:
    return dict(PROCFILE_VAR.findall((ROOT / "Procfile").read_text()))


def same_value(stated: str, actual: object) -> bool:
    if isinstance(actual, bool):
        return stated.lower() == str(actual).lower()
    if isinstance(actual, (int, float)):
        try:
            return float(stated.replace(",", "")) == float(actual)
        except ValueError:
            return False
    return stated == str(actual)


# --- the README ---------------------------------------------------------------------------

def test_every_setting_is_in_the_readme() -> None:
    missing = [env for env in setting_names() if f"`{env}`" not in README]
    assert missing == []


def test_the_readme_links_the_contract() -> None:
    assert "(docs/contract.md)" in README


@pytest.mark.parametrize("path", [README_PATH, CONTRACT_PATH], ids=lambda p: p.name)
def test_no_document_points_outside_the_repository(path: Path) -> None:
    """Links are relative and resolve to files in the repository (or are web addresses);
    no path climbs out of it or names this machine's folders."""
    text = path.read_text()
    assert "../" not in text
    assert "/work/" not in text
    assert not re.search(r"(?<![\w.:/])/(?:home|tmp|root|srv|opt|mnt)/", text)
    for target in MARKDOWN_LINK.findall(text):
        if re.match(r"^(https?:|mailto:|#)", target):
            continue
        resolved = (path.parent / target.split("#", 1)[0]).resolve()
        assert resolved.is_relative_to(ROOT), target
        assert resolved.exists(), target


# --- the contract -------------------------------------------------------------------------

def test_the_contract_lives_in_the_repository() -> None:
    """docs/contract.md keeps the numbered sections the code and tests refer to
    ("contract section 2") and says how it differs from the contract it started from."""
    assert CONTRACT_PATH.is_file()
    headings = re.findall(r"^## (\d+)\. ", contract(), flags=re.MULTILINE)
    assert headings == [str(n) for n in range(1, 8)]
    assert "## Changes from the original contract" in contract()


def test_every_setting_is_named_in_the_contract_or_the_readme() -> None:
    documented = contract() + README
    missing = [env for env in setting_names() if f"`{env}`" not in documented]
    assert missing == []


def test_the_contract_names_only_real_settings() -> None:
    """Every environment variable the contract names is read by the worker, the emulator
    or the Procfile."""
    worker_reads = {name for source in (ROOT / "worker").rglob("*.py")
                    for name in ENVIRON_READ.findall(source.read_text())}
    known = set(setting_names()) | set(EMULATOR_ENV_FIELDS) | set(procfile_defaults()) | worker_reads
    unknown = sorted(set(ENV_NAME.findall(contract())) - known)
    assert unknown == []


def test_the_contract_states_the_defaults_the_code_has() -> None:
    settings, procfile = setting_names(), procfile_defaults()
    stated = STATED_DEFAULT.findall(contract())
    assert len(stated) >= 8  # REDIS_URL, OUTBOUND_STREAM, METRICS_PORT, WORKER_THREADS, ...
    wrong = []
    for name, value in stated:
        if name in settings:
            actual: object = setting_default(settings[name])
        elif name in EMULATOR_ENV_FIELDS:
            actual = getattr(EmulatorConfig(), EMULATOR_ENV_FIELDS[name])
        elif procfile.get(name):
            actual = procfile[name]
        else:
            wrong.append(f"{name}: no default to compare with")
            continue
        if not same_value(value, actual):
            wrong.append(f"{name}: the contract says {value}, the code has {actual!r}")
    assert wrong == []
