"""The soak: zingest at half its measured single-row maximum for a while, RSS of every process each second.

Single-row requests, because what a gateway keeps per job (statuses, pending
records, journal entries) is what could leak, and single rows make the most
jobs. Growth is judged after a warm-up: the gateway's job store keeps the last
``gateway.status_capacity`` final statuses (a bounded cache, by design), so its
memory rises until that many jobs have passed. The warm-up is the time that
takes at the soak's rate, at least :data:`WARMUP_MIN_SHARE` and at most
:data:`WARMUP_MAX_SHARE` of the soak. A process grows by ``(end - base) / base``,
with ``base`` its RSS when the warm-up ends and ``end`` the median of its last
:data:`END_SAMPLES` samples.
"""

from __future__ import annotations

import statistics
from typing import Any

from tqdm import tqdm

from benchmarks.procs import Monitor, StartError
from benchmarks.runner import FAILED, MIB, OK, Runner
from benchmarks.systems import Zingest
from common.config import GatewayConfig

WARMUP_MIN_SHARE = 0.2
WARMUP_MAX_SHARE = 0.5
END_SAMPLES = 5
SAMPLE_S = 1.0


def growth(series: list[tuple[float, dict[str, int]]], warmup_s: float) -> dict[str, float | None]:
    """Each process's RSS growth after ``warmup_s`` (a fraction: 0.05 is 5%)."""
    after = [each for t, each in series if t >= warmup_s]
    if len(after) < 2:
        return {}
    out: dict[str, float | None] = {}
    for name in after[0]:
        base = after[0][name]
        end = statistics.median(each[name] for each in after[-END_SAMPLES:])
        out[name] = (end - base) / base if base else None
    return out


def soak(runner: Runner, system: Zingest, rate: float, seconds: float) -> dict[str, Any]:
    """Run ``system`` at ``rate`` single-row requests/s for ``seconds``; RSS series, growth and the row check."""
    out: dict[str, Any] = {"system": system.key, "label": system.label, "size": 1, "offered_rate": rate,
                           "seconds": seconds, "status": OK, "problem": None}
    fill_s = GatewayConfig().status_capacity / rate  # until the job store holds as many statuses as it keeps
    warmup_s = min(WARMUP_MAX_SHARE * seconds, max(WARMUP_MIN_SHARE * seconds, fill_s))
    try:
        system.start(runner.env)
        runner.db.reset()
        with Monitor(system.processes(), interval=SAMPLE_S, keep_series=True) as mon:
            load = runner.load(system, 1, "open", seconds, int(rate * seconds) + 1, rate=rate,
                               desc=f"soak {system.key} {seconds:.0f} s")
            figures, problem = runner.check(system, load, True, "soak landing")
        out.update(figures)
        out["ack"] = load["ack"]
        out["requests_per_s"] = load["requests_per_s"]
        out["commit"] = runner.db.commit_latency() if problem is None else None
        out["warmup_s"] = warmup_s
        out["rss_mib"] = [{"t": round(t, 2), **{k: v / MIB for k, v in each.items()}} for t, each in mon.series]
        out["growth"] = growth(mon.series, warmup_s)
        if problem is not None:
            out["status"], out["problem"] = FAILED, problem
    except StartError as exc:
        out["status"], out["problem"] = FAILED, str(exc).splitlines()[0]
    finally:
        if out["status"] == FAILED:
            tqdm.write(f"soak FAILED: {out['problem']}\n{system.log_tails()}")
        out["exit_codes"] = system.stop()
        runner.db.reset()
    return out
