"""`python -m bench.dashboard`: the README's dashboard picture, from real data.

Grafana cannot be installed here, so this draws the dashboard's main panels with matplotlib
from the same PromQL, asked of a real Prometheus server (Debian's package) that scraped
`assistant-worker run` (2 processes) while the producers sent a varied load for a few
minutes: plain messages, tool calls, failing and incomplete runs, at a rate that steps up.
Needs `pip install -e '.[plot]'` (matplotlib).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from bench.load import Sent, make_producer, send_paced
from bench.stack import ROOT, free_port, running_stack
from tests.prometheus_server import PrometheusServer

RATE_EXPR = "[1m]"
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("Reply latency (send to publish)", "seconds", [
        (f"histogram_quantile({q}, sum by (le) (rate(assistant_reply_latency_seconds_bucket{RATE_EXPR})))",
         f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)]),
    ("Run outcomes", "runs / s", [
        (f'sum by (status) (rate(assistant_runs_total{RATE_EXPR}))', "{status}")]),
    ("Active runs (cluster-wide)", "runs", [("max(assistant_runs_active)", "active")]),
    ("API requests", "requests / s", [
        (f'sum by (outcome) (rate(assistant_api_requests_total{RATE_EXPR}))', "{outcome}"),
        (f"sum(rate(assistant_run_polls_total{RATE_EXPR}))", "of which polls")]),
    ("Tool calls", "calls / s", [
        (f'sum by (tool, outcome) (rate(assistant_tool_calls_total{RATE_EXPR}))', "{tool} {outcome}")]),
    ("Tokens per minute", "tokens / min", [
        (f'sum by (kind) (rate(assistant_tokens_total{RATE_EXPR})) * 60', "{kind}")]),
]


def message(rng: random.Random, index: int) -> str:
    roll = rng.random()
    if roll < 0.2:
        return f'call:get_weather{{"city":"Oslo"}} What is the weather? ({index})'
    if roll < 0.25:
        return f"fail:invalid_prompt please ({index})"  # not retried: shows as failed
    if roll < 0.28:
        return f"incomplete answer please ({index})"
    return f"Hello, message {index}."


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="length of the load (4)")
    parser.add_argument("--rate", type=float, default=4.0, help="messages a second in the first half (4); "
                        "the second half sends twice as many")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "metrics.png")
    args = parser.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = random.Random(1)
    folder = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    port = free_port()
    with running_stack(folder / "logs", run_seconds=4.0, processes=2, threads=8,
                       tool_modules="tests.sample_tools", metrics_port=port) as stack, \
            PrometheusServer(folder / "prometheus", [f"127.0.0.1:{port}"]) as prometheus:
        producer = make_producer(stack.redis.url)
        start = time.time()
        half = args.minutes * 30
        sent = Sent()
        count = send_paced(producer, args.rate, half, lambda i: f"dash-{i}", lambda i: message(rng, i), sent)
        send_paced(producer, args.rate * 2, half, lambda i: f"dash-{i}", lambda i: message(rng, i), sent,
                   start_index=count)
        time.sleep(20)  # the last runs end and are scraped
        end = time.time()
        series = [[prometheus.query_range(expr, start, end, step=5) for expr, _ in queries]
                  for _, _, queries in PANELS]

    figure, axes = plt.subplots(2, 3, figsize=(15, 7.5), constrained_layout=True)
    for ax, (title, unit, queries), results in zip(axes.flat, PANELS, series, strict=True):
        for (_, legend), result in zip(queries, results, strict=True):
            for line in result:
                times = [float(t) - start for t, _ in line["values"]]
                values = [float(v) for _, v in line["values"]]
                ax.plot(times, values, label=legend.format_map(_Labels(line["metric"])))
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.set_xlabel("seconds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    figure.suptitle(f"assistant-worker: {len(sent)} messages over {args.minutes:g} min "
                    f"({args.rate:g}/s then {args.rate * 2:g}/s), 4 s runs, 2 processes; "
                    "Prometheus queries of the dashboard")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


class _Labels(dict):
    def __missing__(self, key: str) -> str:
        return ""


if __name__ == "__main__":
    main()
