"""`assistant-worker`: start the workers, create or update the assistant."""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker import lifeline, startup
from worker.commandline import Parser, UsageError, common_options, epilog, execute
from worker.settings import Settings, load_settings

PROG = "assistant-worker"
API_SETTINGS = "OPENAI_API_KEY, OPENAI_BASE_URL, API_TIMEOUT_SECONDS"

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _import_from_the_current_directory()
    return execute(PROG, args, lambda: _command(args))


def _command(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.command == "run":
        return run_workers(settings)
    return manage_assistant(settings, args)


def build_parser() -> Parser:
    common = common_options()
    parser = Parser(prog=PROG, parents=[common], description="Run the workers; manage the assistant.",
                    epilog=epilog("those each command's --help names"))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", parents=[common], help="start WORKER_PROCESSES x WORKER_THREADS workers and /metrics",
                        epilog=epilog("every setting (the README's Settings table)"))
    assistant = commands.add_parser("assistant", parents=[common], help="manage the assistant",
                                    epilog=epilog("those each action's --help names"))
    actions = assistant.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("create", parents=[common], help="create an assistant from settings and the registered tools",
                       epilog=epilog(f"{API_SETTINGS}, ASSISTANT_NAME, ASSISTANT_MODEL, ASSISTANT_INSTRUCTIONS, "
                                     "WORKER_TOOL_MODULES"))
    push = actions.add_parser("push-tools", parents=[common], help="merge the registered tools into an assistant",
                              epilog=epilog(f"{API_SETTINGS}, ASSISTANT_ID, WORKER_TOOL_MODULES"))
    push.add_argument("--assistant-id", help="default: ASSISTANT_ID")
    actions.add_parser("tools", parents=[common], help="print the registered function definitions",
                       epilog=epilog("WORKER_TOOL_MODULES (importable from the current directory or PYTHONPATH)"))
    return parser


def _import_from_the_current_directory() -> None:
    """Tool modules (WORKER_TOOL_MODULES) import from where the command runs, as under
    `python -m`: an installed console script has only its own folder on sys.path."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def run_workers(settings: Settings) -> int:
    """Run Dramatiq's worker processes under this process, which serves the metrics."""
    signals = _Forwarder()  # first, so that a SIGTERM during start-up is passed on too
    folder = _share_a_metrics_folder()
    from worker.http import bind_http_server  # imports prometheus_client: after the env

    try:  # the port first: a port in use fails alone, with nothing started and nothing to stop
        server = bind_http_server(settings) if settings.metrics_port else None
    except OSError as exc:
        print(f"assistant-worker: {_port_problem(settings.metrics_port, exc)}", file=sys.stderr)
        return 69 if exc.errno == errno.EADDRINUSE else 78
    try:
        _clear_stale_files(folder)
        return _probe_and_start(settings, signals, server)
    finally:
        if server is not None:
            server.server_close()


def _probe_and_start(settings: Settings, signals: _Forwarder, server: WSGIServer | None) -> int:
    first = startup.probe(settings)
    if first.fatal:
        print(f"assistant-worker: {first.fatal}", file=sys.stderr)
        return 78
    if first.problem:
        print(f"assistant-worker: not ready yet: {first.problem} (/readyz says so until it answers)",
              file=sys.stderr)
    if settings.assistant_backend == "assistants" and not settings.assistant_id:
        print("assistant-worker: ASSISTANT_ID is not set: events that name no assistant are rejected",
              file=sys.stderr)
    if signals.stopped():
        return 0
    return _supervise(settings, signals, server, startup.StartupCheck(settings, first))


def _port_problem(port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:  # 69: the port is taken now; the same setting works once it is free
        return f"METRICS_PORT {port} is in use: stop what listens there or set METRICS_PORT to a free port"
    return f"METRICS_PORT {port} cannot be served: {exc.strerror or exc}"


def _supervise(settings: Settings, signals: _Forwarder, server: WSGIServer | None,
               check: startup.StartupCheck) -> int:
    """Start the Dramatiq processes, serve the port, wait; whatever happens, no Dramatiq
    process outlives this function."""
    from worker.http import serve_in_background

    command, env = _dramatiq_command(settings)
    # A session of their own: a signal to this process's group (honcho's stop, Ctrl-C in a
    # terminal) reaches them once, forwarded, as a pod's SIGTERM does; twice would make each
    # Dramatiq worker process quit at once ("Killing worker process...") instead of draining.
    # They die with this process if it is SIGKILLed (lifeline).
    child = subprocess.Popen(command, env=env, start_new_session=True,
                             preexec_fn=lifeline.die_with_parent)  # noqa: PLW1509 - one system call, before any thread
    try:
        signals.attach(child)
        if server is None:
            return child.wait()
        serve_in_background(server, child, check)
        try:
            return child.wait()
        finally:
            server.shutdown()
    finally:
        _stop(child, settings.worker_shutdown_seconds + 10)


def _stop(child: subprocess.Popen[bytes], grace: float) -> None:
    """After an error: SIGTERM (a drain), then SIGKILL of its whole session after `grace`."""
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


class _Forwarder:
    """The stop signals, taken over: each is passed on to the Dramatiq main process (held
    until there is one), SIGINT as SIGTERM so that Ctrl-C drains as a pod's stop does."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self.pending: list[int] = []
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        signum = signal.SIGTERM if signum == signal.SIGINT else signum
        if self.child is None:
            self.pending.append(signum)
        else:
            self.child.send_signal(signum)

    def stopped(self) -> bool:
        """Asked to stop before any worker process started."""
        return signal.SIGTERM in self.pending

    def attach(self, child: subprocess.Popen[bytes]) -> None:
        self.child = child  # from here on, a signal goes straight to it
        for early in self.pending:
            child.send_signal(early)


def _share_a_metrics_folder() -> Path:
    """One folder for the worker processes' metrics and heartbeats, named in the environment
    before prometheus_client is first imported (it picks its mode then)."""
    from worker.health import POD_FOLDER_ENV  # no prometheus_client in there

    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="aw-prom-")
    Path(metrics_dir).mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # Dramatiq's own metrics: the same folder.
    os.environ["dramatiq_prom_db"] = metrics_dir  # noqa: SIM112 - Dramatiq reads this lowercase name
    os.environ[POD_FOLDER_ENV] = metrics_dir  # the worker processes' heartbeats go there too
    return Path(metrics_dir)


def _clear_stale_files(folder: Path) -> None:
    """Files of a previous run would be added to this one's figures. Cleared once the port
    is ours: a second worker started by mistake on the same folder fails on the port first."""
    from worker.health import PREFIX as HEARTBEAT_PREFIX

    for stale in [*folder.glob("*.db"), *folder.glob(f"{HEARTBEAT_PREFIX}*")]:
        stale.unlink()


WORKER_THREAD_TIMEOUT_MS = 1000  # Dramatiq's own default


def _dramatiq_command(settings: Settings) -> tuple[list[str], dict[str, str]]:
    command = [sys.executable, "-m", "dramatiq", "worker.app",
               "--processes", str(settings.worker_processes),
               "--threads", str(settings.worker_threads),
               "--queues", settings.worker_queue, "--skip-logging",
               "--worker-shutdown-timeout", str(int(settings.worker_shutdown_seconds * 1000))]
    # Dramatiq's worker timeout: how often its idle worker threads wake to see whether they
    # should stop. Its consumers' idle wait is WORKER_IDLE_POLL_MS instead (wakeup.py).
    return command, {**os.environ, "dramatiq_worker_timeout": str(WORKER_THREAD_TIMEOUT_MS)}


def manage_assistant(settings: Settings, args: argparse.Namespace) -> int:
    from worker.tools import definitions, load_tool_modules

    load_tool_modules(settings.tool_modules)
    functions = definitions()
    if args.action == "tools":
        print(json.dumps(functions, indent=2))
        return 0
    from worker.runtime import make_openai  # the SDK and the rest: not for printing the tools

    client = make_openai(settings).with_options(max_retries=2)
    if args.action == "create":
        created = client.beta.assistants.create(
            name=settings.assistant_name, model=settings.assistant_model,
            instructions=settings.assistant_instructions,
            tools=functions)  # type: ignore[arg-type]  # plain dicts of the SDK's TypedDicts' shape
        print(created.id)
        return 0
    assistant_id = args.assistant_id or settings.assistant_id
    if not assistant_id:
        raise UsageError("push-tools needs --assistant-id or ASSISTANT_ID")
    raw = client.beta.assistants.with_raw_response.retrieve(assistant_id)
    existing = json.loads(raw.text).get("tools") or []
    merged = merge_tools(existing, functions)
    client.beta.assistants.update(
        assistant_id, tools=merged)  # type: ignore[arg-type]  # plain dicts of the SDK's TypedDicts' shape
    print(f"{assistant_id}: {len(merged)} tools ({len(functions)} functions pushed)")
    return 0


def merge_tools(existing: list[dict[str, Any]], functions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep hosted tools and functions we don't register; ours replace same-named ones."""
    ours = {f["function"]["name"] for f in functions}
    kept = [t for t in existing
            if t.get("type") != "function" or (t.get("function") or {}).get("name") not in ours]
    return kept + functions


if __name__ == "__main__":
    sys.exit(main())
