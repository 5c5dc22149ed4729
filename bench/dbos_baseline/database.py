"""The baseline's PostgreSQL: a scratch system database made and dropped by the bench, whether
the server is reachable, and the server's processes (for their CPU)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from bench import procs

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    """DBOS_SYSTEM_DATABASE_URL, else the local PostgreSQL: where the scratch databases are made."""
    return os.environ.get("DBOS_SYSTEM_DATABASE_URL") or DEFAULT_URL


def _connect(url: str):  # type: ignore[no-untyped-def]
    import psycopg  # dbos's own driver (the `bench` extra)

    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True,
                           connect_timeout=3)


def unavailable() -> str | None:
    """Why the DBOS baseline cannot run here (None: it can): dbos missing, PostgreSQL unreachable."""
    try:
        import dbos  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError as exc:
        return f"dbos is not installed ({exc}; pip install -e '.[bench]')"
    try:
        with _connect(admin_url()) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure to connect means: skip the baseline
        reason = " ".join(str(exc).split())[:120]  # one line
        return f"PostgreSQL is unreachable at {_redacted(admin_url())} ({type(exc).__name__}: {reason})"
    return None


def _redacted(url: str) -> str:
    """The URL without its password."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    return f"{scheme}://{credentials.split(':', 1)[0]}@{host}"


def _with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0] if base.count("/") > 2 else base
    return f"{base}/{name}" + (f"?{query}" if query else "")


@contextmanager
def scratch_database() -> Iterator[str]:
    """A new, empty database on the server of admin_url(), dropped on the way out: its URL."""
    name = f"bench_dbos_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = admin_url()
    with _connect(url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(url, name)
    finally:
        with _connect(url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_pids(url: str) -> list[int]:
    """The server's processes: the postmaster (the parent of this connection's backend) and
    everything below it, when the server runs on this machine (else [])."""
    with _connect(url) as conn:  # the backend's parent read while it lives
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        backend = int(row[0]) if row else 0
        parents = {child: parent for parent, children in procs.parent_map().items() for child in children}
    postmaster = parents.get(backend)
    return procs.descendants(postmaster) if postmaster and postmaster > 1 else []
