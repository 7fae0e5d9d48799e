"""The cases' worker with many cases parked, then a burst of decisions on them.

    python -m bench.parked [--parked 10000] [--burst 1000] [--cache 100] [--concurrency 40]
                           [--out results/parked.json] [--json]

Production shape, as `podium up` runs it: a Temporal dev server and database of its own
(`bench.server`, `bench.data`), the cases' worker (`python -m worker`, role `cases`: every
process, no model loaded) and the models' worker (role `models`) in their own subprocesses,
payload encryption on, the refund policy file on every case, audit, decision tokens.

1. `--parked` refund cases over the automatic limit are opened until each waits for a person
   (verified on the server: running, nothing pending, `PodiumAwaitingApproval`), `--concurrency`
   at a time; the cases' worker keeps at most `--cache` of them in its sticky cache
   (`PODIUM_MAX_CACHED_WORKFLOWS`), the others are evicted and replay on their next event;
2. the cases' worker's RSS when idle, before and after (the models' worker's apart);
3. `--burst` of them decided at once (the `record_decision` update, signed decisions): the time
   until every one has its outcome (refund issued), every acknowledgement and outcome latency,
   and what the cases' worker's cache did meanwhile (from its metrics endpoint: Temporal's
   sticky cache hits, misses and forced evictions, the cases it loaded and pushed out, the
   polls its guard held back; `--no-guard` for Temporal's plain cache).

A report, not an assertion; exit 1 when a case did not park or did not end approved with a
refund.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx
from prometheus_client.parser import text_string_to_metric_families

from activities.policy import PolicyVersions
from bench.compare import PARKED_ORDERS, Systems, burst, park
from bench.data import count_refunds, seed_cases
from bench.gate import (
    MIB,
    Progress,
    check_snapshot,
    podium_client,
    production_settings,
    report_header,
    snapshot_code,
    worker_env,
    worker_process,
)
from bench.server import dev_server
from core.db import create_tables, make_engine
from core.decision_tokens import DecisionKey
from core.policy import load_policy, policy_path
from workflows.contracts import search_attributes as sa

BURST_TIMEOUT_S = 1_200.0


@dataclass
class Options:
    parked: int = 10_000
    burst: int = 1_000
    cache: int = 100
    sticky_timeout_s: float = 10.0
    guard: bool = True
    concurrency: int = 40
    seed: int = 13
    timeout_s: float = 7_200.0


async def run_benchmark(opts: Options, out: TextIO = sys.stderr) -> dict[str, Any]:
    if min(opts.parked, opts.burst, opts.cache, opts.concurrency) < 1:
        raise ValueError("--parked, --burst, --cache and --concurrency must be >= 1")
    if opts.burst > opts.parked:
        raise ValueError("--burst cannot exceed --parked")
    progress = Progress(out)
    run = uuid.uuid4().hex[:8]
    report: dict[str, Any] = report_header("parked")
    with tempfile.TemporaryDirectory(prefix="podium-bench-parked-") as tmp:
        workdir = Path(tmp)
        settings = production_settings(
            workdir,
            run,
            max_cached_workflows=opts.cache,
            sticky_queue_timeout_s=opts.sticky_timeout_s,
            sticky_cache_guard=opts.guard,
        )
        database_url = settings.resolved_database_url
        key = DecisionKey.from_settings(settings)
        document = load_policy(policy_path(None, "refund"))
        limit = round(float(document.limits.auto_refund_limit) * 100)
        report["config"] = {
            "parked": opts.parked,
            "burst": opts.burst,
            "max_cached_workflows": opts.cache,
            "sticky_queue_timeout_s": opts.sticky_timeout_s,
            "sticky_cache_guard": opts.guard,
            "concurrency": opts.concurrency,
            "payload_encryption": "on",
            "policy_file": f"policies/refund.yaml ({document.digest}), carried by digest",
            "workers": "python -m worker: role cases (measured) and role models",
            "decision_update": "record_decision",
        }
        engine = make_engine(database_url)
        create_tables(engine)
        PolicyVersions(engine).save("refund", document.model_dump(mode="json"))  # as the starter
        cases = seed_cases(
            engine,
            label=f"parked-{run}",
            first_number=PARKED_ORDERS,
            count=opts.parked,
            min_cents=limit + 100,
            max_cents=4 * limit,
            rng=random.Random(opts.seed),
        )
        code = snapshot_code(workdir)
        progress.say(f"seeded {len(cases)} cases; the workers run a snapshot in {code}")
        queue = f"bench-parked-{run}"
        try:
            async with asyncio.timeout(opts.timeout_s), dev_server(workdir, sa.ALL) as server:
                base = worker_env(settings, server, database_url, queue, code)
                base["PODIUM_DECISION_SECRET"] = key.secret
                base["PODIUM_WORKER_METRICS_PORT"] = "0"
                # The cases' worker serves its metrics, as in production: the cache's hits,
                # misses and forced evictions over the burst come from Temporal's own counters.
                metrics_port = free_port()
                cases_env = base | {
                    "PODIUM_WORKER_ROLE": "cases",
                    "PODIUM_WORKER_METRICS_PORT": str(metrics_port),
                }
                models_env = base | {"PODIUM_WORKER_ROLE": "models"}
                metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
                check_snapshot(cases_env, workdir, code)
                client = podium_client(server, settings)
                systems = Systems(
                    client,
                    key,
                    document.model_dump(mode="json"),
                    {"podium": queue},
                    policy_stored=True,
                )
                async with (
                    worker_process("cases", "worker", cases_env, workdir) as worker,
                    worker_process("models", "worker", models_env, workdir) as models,
                ):
                    started = time.perf_counter()
                    parked = await park(
                        systems, "podium", cases, opts.concurrency, worker, progress
                    )
                    parked_s = time.perf_counter() - started
                    models.ensure_alive()
                    p = parked.report()
                    progress.say(
                        f"{p['verified']} parked in {parked_s:.0f}s; cases' worker "
                        f"{p['worker_rss_mib_before']} -> {p['worker_rss_mib_parked']} MiB"
                    )
                    report["parked"] = p | {
                        "parked_s": round(parked_s, 1),
                        "models_worker_rss_mib": round(models.rss() / MIB, 1),
                        "cases_worker_peak_rss_mib": round(worker.peak_rss() / MIB, 1),
                    }
                    ok = [c.case_id for c in cases if c.case_id not in set(parked.not_parked)]
                    chosen = random.Random(opts.seed).sample(ok, min(opts.burst, len(ok)))
                    progress.say(f"burst: {len(chosen)} decisions at once")
                    cache_before = await cache_counters(metrics_url)
                    # Each decision may take until the whole burst is done: the figure is the
                    # time until the last outcome, not a per-decision deadline.
                    result = await worker.alive_while(
                        burst(systems, "podium", "record_decision", chosen, BURST_TIMEOUT_S),
                        opts.timeout_s,
                    )
                    progress.say(
                        f"burst: all {result['n']} outcomes in {result['wall_s']}s, "
                        f"{len(result['failures'])} failures"
                    )
                    cache_after = await cache_counters(metrics_url)
                    report["burst"] = result | {
                        "cache": {k: cache_after[k] - cache_before.get(k, 0) for k in cache_after},
                        "failures": result["failures"][:20],
                        "failure_count": len(result["failures"]),
                        "cases_worker_rss_mib_after": round(worker.rss() / MIB, 1),
                        "cases_worker_peak_rss_mib": round(worker.peak_rss() / MIB, 1),
                    }
                    report["refund_rows"] = count_refunds(engine, chosen)
        finally:
            engine.dispose()
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


CACHE_COUNTERS = {
    "hits": "temporal_sticky_cache_hit_total",
    "misses": "temporal_sticky_cache_miss_total",
    "forced_evictions": "temporal_sticky_cache_total_forced_eviction_total",
    "workflow_tasks": "temporal_workflow_task_execution_latency_count",
    "cases_loaded": "podium_cases_loaded_total",
    "intake_waits": "podium_cache_intake_waits_total",
    "pushed_out": "podium_cases_pushed_out_total",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def cache_counters(url: str) -> dict[str, float]:
    """Temporal's cache counters of the cases' worker, summed over their labels; {} when its
    metrics cannot be read (the figures are then left out, the run goes on)."""
    try:
        async with httpx.AsyncClient(timeout=10.0) as http:
            text = (await http.get(url)).text
    except httpx.HTTPError:
        return {}
    sums = dict.fromkeys(CACHE_COUNTERS, 0.0)
    names = {v: k for k, v in CACHE_COUNTERS.items()}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = names.get(sample.name)
            if key is not None:
                sums[key] += sample.value
    return sums


def render(report: dict[str, Any]) -> str:
    p, b = report["parked"], report["burst"]
    return "\n".join(
        [
            f"parked: {p['verified']}/{p['cases']} in {p['parked_s']}s; cases' worker RSS "
            f"{p['worker_rss_mib_before']} -> {p['worker_rss_mib_parked']} MiB idle "
            f"(cache {report['config']['max_cached_workflows']}); models' worker "
            f"{p['models_worker_rss_mib']} MiB",
            f"burst: {b['n']} decisions at once, every outcome in {b['wall_s']}s; ack p95 "
            f"{b['ack_ms']['p95']} ms, outcome p95 {b['outcome_ms']['p95']} ms; "
            f"{b['failure_count']} failures; {report['refund_rows']} refund rows; cases' worker "
            f"{b['cases_worker_rss_mib_after']} MiB after (peak {b['cases_worker_peak_rss_mib']})",
            "burst, the cases' worker's cache: "
            + (", ".join(f"{k} {v:.0f}" for k, v in b["cache"].items()) or "metrics unavailable"),
        ]
    )


def parse_args(argv: Sequence[str] | None = None) -> tuple[Options, bool, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m bench.parked", description=__doc__)
    d = Options()
    parser.add_argument("--parked", type=int, default=d.parked)
    parser.add_argument("--burst", type=int, default=d.burst)
    parser.add_argument("--cache", type=int, default=d.cache)
    parser.add_argument(
        "--sticky-timeout",
        type=float,
        default=d.sticky_timeout_s,
        help="seconds a cached case's task waits for its worker (PODIUM_STICKY_QUEUE_TIMEOUT_S)",
    )
    parser.add_argument(
        "--no-guard",
        action="store_true",
        help="Temporal's plain least-recently-used cache (PODIUM_STICKY_CACHE_GUARD=false)",
    )
    parser.add_argument("--concurrency", type=int, default=d.concurrency)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--timeout", type=float, default=d.timeout_s)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    return (
        Options(
            parked=args.parked,
            burst=args.burst,
            cache=args.cache,
            sticky_timeout_s=args.sticky_timeout,
            guard=not args.no_guard,
            concurrency=args.concurrency,
            seed=args.seed,
            timeout_s=args.timeout,
        ),
        args.json,
        args.out,
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts, as_json, out_path = parse_args(argv)
    report = asyncio.run(run_benchmark(opts))
    text = json.dumps(report, indent=2)
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(text + "\n")
    print(text if as_json else render(report))
    ok = (
        not report["parked"]["not_parked"]
        and report["burst"]["failure_count"] == 0
        and report["refund_rows"] == report["burst"]["n"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
