"""``python -m benchmarks [--quick] [--out DIR]``: run every system, check every row, write the report.

Full mode (``make bench``, roughly 15-25 minutes on 2 cores): the COPY ceilings
with one and two sessions, bare aiohttp, naive direct INSERT, the original
Redis design, zingest with 1, 2 and 4 sinks in memory and disk durability and
its CSV lane, each with single-row and 1,000-row requests; then a 5-minute
soak. Results go to ``benchmarks/results/`` unless ``--out`` says otherwise.

Quick mode (``make bench QUICK=1``, CI): a smoke of the harness in well under
two minutes: one COPY session, bare, naive, the Redis design (only if a
server is there or can be started) and zingest in memory with one sink, a few
seconds each, and a 15-second soak; results in a temporary folder unless
``--out`` is given.

Exit status: 0 when every system's row check passed, 1 when one failed,
2 when the benchmark could not run (no Redis server for a full run, say).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from benchmarks import machine, plots, report, targets
from benchmarks.data import POOL_ROWS, ROOT, SEED
from benchmarks.db import Database
from benchmarks.redisctl import RedisServer, find_redis
from benchmarks.runner import FAILED, OK, SKIPPED, Runner, Timing, bar
from benchmarks.soak import soak
from benchmarks.systems import Bare, Env, Naive, OriginalDesign, System, Zingest

EXIT_OK, EXIT_FAILED, EXIT_CANNOT_RUN = 0, 1, 2
DEFAULT_OUT = ROOT / "benchmarks" / "results"
SIZES = (1, 1000)


class CannotRun(RuntimeError):
    """Something the full run needs is missing; the message says what to install."""


@dataclass(frozen=True)
class Case:
    """A system and the request sizes it is measured with; COPY when ``make`` is None."""

    key: str
    sizes: tuple[int, ...]
    make: Callable[[], System] | None = None
    sessions: int = 0


@dataclass(frozen=True)
class Plan:
    mode: str
    timing: Timing
    cases: tuple[Case, ...]
    soak: Callable[[], Zingest]
    soak_s: float
    needs_redis: bool  # a full run refuses to start without Redis; a quick one skips that system
    fsync_probe_s: float  # how long the disk's fsync latency is sampled before the run


def _zingest_cases(configs: list[tuple[int, str, str]]) -> list[Case]:
    return [Case(f"zingest-{d}-{n}" + ("" if f == "json" else f"-{f}"), SIZES, partial(Zingest, n, d, f))
            for n, d, f in configs]


# Every case there is, in the order they run: ceilings, alternatives, zingest.
ALL_CASES = (
    Case("copy-1", SIZES, sessions=1), Case("copy-2", SIZES, sessions=2),
    Case("bare", SIZES, Bare), Case("naive", SIZES, Naive), Case("redis", SIZES, OriginalDesign),
    *_zingest_cases([(n, d, "json") for d in ("memory", "disk") for n in (1, 2, 4)] + [(2, "disk", "csv")]),
)

FULL = Plan(
    mode="full",
    timing=Timing(max_s=10, half_s=10, warmup_requests=200, land_stall_s=30,
                  concurrency={1: 32, 1000: 8}, max_requests={1: 100_000, 1000: 2_000},
                  copy_max_rows=4_000_000),
    cases=ALL_CASES,
    soak=partial(Zingest, 2, "disk"), soak_s=300, needs_redis=True, fsync_probe_s=10,
)

QUICK = Plan(
    mode="quick",
    timing=Timing(max_s=1.5, half_s=1.5, warmup_requests=20, land_stall_s=15,
                  concurrency={1: 32, 1000: 8}, max_requests={1: 5_000, 1000: 100},
                  copy_max_rows=200_000),
    cases=(Case("copy-1", (1000,), sessions=1), Case("bare", SIZES, Bare), Case("naive", SIZES, Naive),
           Case("redis", SIZES, OriginalDesign), *_zingest_cases([(1, "memory", "json")])),
    soak=partial(Zingest, 1, "memory"), soak_s=15, needs_redis=False, fsync_probe_s=2,
)


def run(plan: Plan, work: Path, only: set[str] | None = None) -> dict[str, Any]:
    """Every case of ``plan``, then the soak; with ``only``, the cases of any plan it names ("soak": the soak)."""
    with_soak = only is None or "soak" in only
    wanted = None if only is None else only | ({plan.soak().key} if with_soak else set())
    db = Database(work)
    redis: RedisServer | None = None
    skipped: list[dict[str, str]] = []
    timing = {"max_s": plan.timing.max_s, "half_s": plan.timing.half_s, "soak_s": plan.soak_s,
              "concurrency": {str(k): v for k, v in plan.timing.concurrency.items()}}
    results: dict[str, Any] = {"mode": plan.mode, "machine": machine.facts(), "seed": SEED, "pool_rows": POOL_ROWS,
                               "timing": timing}
    try:
        results["disk_fsync"] = machine.fsync_probe(work, plan.fsync_probe_s)
        db.start()
        results["postgres"] = {"where": db.kind, **db.settings()}
        cases = list(plan.cases) if wanted is None else [c for c in ALL_CASES if c.key in wanted]
        if any(c.key == "redis" for c in cases):
            found = find_redis(work)
            if isinstance(found, str):
                if plan.needs_redis:
                    raise CannotRun(found)
                skipped.append({"system": "redis", "reason": found})
            else:
                redis = found
                results["redis"] = redis.facts()
        runner = Runner(db, Env(db.dsn, work, redis), plan.timing)
        cases = [c for c in cases if not (c.key == "redis" and redis is None)]
        out: list[dict[str, Any]] = []
        total = sum(len(c.sizes) for c in cases) + with_soak
        with bar(total=total, desc="benchmark", unit="run", position=0) as overall:
            for case in cases:
                for size in case.sizes:
                    overall.set_postfix_str(f"{case.key} x{size}")
                    out.append(runner.copy_case(case.sessions, size) if case.make is None
                               else runner.http_case(case.make(), size))
                    overall.update()
            system = plan.soak()
            overall.set_postfix_str(f"soak {system.key}")
            single = next((r for r in out if r["system"] == system.key and r["size"] == 1), None)
            if not with_soak:
                results["soak"] = {"system": system.key, "status": SKIPPED, "problem": "not asked for (--only)"}
            elif single is None or single["status"] != OK:
                results["soak"] = {"system": system.key, "status": FAILED,
                                   "problem": "its single-row maximum was not measured"}
            else:
                rate = 0.5 * single["max"]["rows_per_s_committed"]
                results["soak"] = soak(runner, system, rate, plan.soak_s)
            overall.update(with_soak)
        results["cases"] = out
        results["skipped"] = skipped
    finally:
        if redis is not None:
            redis.stop()
        db.stop()
    return results


def write_report(results: dict[str, Any], out: Path) -> None:
    results["plots"] = plots.write_all(results, out)
    (out / "report.md").write_text(report.markdown(results), encoding="utf-8")


def render(out: Path) -> int:
    """report.md and the plots again from a results.json (after benchmarks/analysis.md changed, say)."""
    try:
        results = orjson.loads((out / "results.json").read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        print(f"benchmarks: cannot read {out / 'results.json'}: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    write_report(results, out)
    print(f"results: {out}", file=sys.stderr)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a small smoke of the harness (CI)")
    p.add_argument("--out", type=Path, help="results folder (default: benchmarks/results; quick: a temporary one)")
    p.add_argument("--keep-work", action="store_true", help="keep the work folder (logs, database) afterwards")
    p.add_argument("--only", metavar="KEYS", help="comma-separated systems to run (e.g. copy-1,zingest-disk-2,soak)")
    p.add_argument("--render", type=Path, metavar="DIR",
                   help="run nothing: write DIR/report.md and the plots again from DIR/results.json")
    args = p.parse_args(argv)
    if args.render is not None:
        return render(args.render)
    plan = QUICK if args.quick else FULL
    known = {c.key for c in ALL_CASES} | {"soak"}
    if args.only and (unknown := set(args.only.split(",")) - known):
        p.error(f"unknown system(s) {', '.join(sorted(unknown))}; choose from {', '.join(sorted(known))}")
    out = args.out or (Path(tempfile.mkdtemp(prefix="zingest-bench-results-")) if args.quick else DEFAULT_OUT)
    work = Path(tempfile.mkdtemp(prefix="zingest-bench-"))
    started = time.monotonic()
    try:
        results = run(plan, work, set(args.only.split(",")) if args.only else None)
        results["wall_s"] = time.monotonic() - started
        results["only"] = sorted(args.only.split(",")) if args.only else None
    except CannotRun as exc:
        print(f"benchmarks: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    finally:
        if args.keep_work:
            print(f"work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["targets"] = targets.targets(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    write_report(results, out)
    failed = [f"{r['system']} x{r['size']}: {r['problem']}" for r in results["cases"] if r["status"] != OK]
    if results["soak"]["status"] == FAILED:
        failed.append(f"soak: {results['soak']['problem']}")
    print(report.summary(results), file=sys.stderr)
    print(f"results: {out}", file=sys.stderr)
    for line in failed:
        print(f"FAILED {line}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
