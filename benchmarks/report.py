"""``report.md`` from ``results.json``: tables per request size, the targets, the soak, how it was measured.

The reading of the figures (why a target is missed, what each optimisation
bought) is written by people, in ``benchmarks/analysis.md``, and placed after
the targets.
"""

from __future__ import annotations

from typing import Any

from benchmarks.data import ROOT

from benchmarks.targets import busiest, half

SIZE_TITLES = {1000: "1,000-row requests", 1: "Single-row requests"}
ANALYSIS = ROOT / "benchmarks" / "analysis.md"


def num(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def pair(a: float | None, b: float | None) -> str:
    return "–" if a is None and b is None else f"{ms(a)} / {ms(b)}"


def _row(c: dict[str, Any]) -> str:
    mx = c.get("max") or {}
    ack = (mx.get("load") or {}).get("ack") or {}
    status = "ok" if c["status"] == "ok" else f"**{c['status']}**: {c['problem']}"
    rps = mx.get("rows_per_s_committed")
    if c["group"] == "ceiling" and c["system"] == "bare":
        rps_text = f"({num(mx.get('requests_per_s', 0) * c['size'])} acked)" if mx.get("requests_per_s") else "–"
    else:
        rps_text = num(rps)
    return " | ".join([
        c["label"], status, rps_text, num(mx.get("requests_per_s")), pair(ack.get("p50_ms"), ack.get("p99_ms")),
        num(half(c, "offered_rate"), 1), pair(half(c, "load", "ack", "p50_ms"), half(c, "load", "ack", "p99_ms")),
        pair(half(c, "commit", "p50_ms"), half(c, "commit", "p99_ms")),
        num(mx.get("cpu_s_per_100k_rows"), 2), num(mx.get("pg_cpu_s_per_100k_rows"), 2),
        num(c.get("peak_rss_mib")),
    ])


HEADER = ("| system | check | rows/s committed | requests/s | ack p50 / p99 ms (max) | half load req/s "
          "| ack p50 / p99 ms (half) | commit p50 / p99 ms (half) | CPU s / 100k rows | PostgreSQL CPU s / 100k rows "
          "| peak RSS MiB |\n|" + "---|" * 11)


def _targets(results: dict[str, Any]) -> list[str]:
    lines = [("| target | zingest | measured | target | verdict | margin | busiest processes at the maximum "
              "(share of one core) |"), "|---|---|---|---|---|---|---|"]
    for t in results.get("targets", []):
        if t["unit"] == "×":
            measured, goal = ("–" if t["measured"] is None else f"{t['measured']:.2f}×"), f"{t['goal']:g}×"
        elif t["unit"] == "fraction":
            measured = "–" if t["measured"] is None else f"{t['measured']:+.1%}"
            goal = f"< {t['goal']:.0%}"
        else:
            measured, goal = ms(t["measured"]) + " ms" if t["measured"] is not None else "–", f"≤ {t['goal']:g} ms"
        if t["margin"] is None:
            margin = "not measured"
        elif t["verdict"] == "PASS":
            margin = f"{t['margin']:.0%} to spare"
        elif t["unit"] == "×":
            margin = f"short by {-t['margin']:.0%} (reached {t['measured'] / t['goal']:.0%} of the target)"
        else:
            margin = f"{t['measured'] / t['goal']:.1f}× the limit"
        lines.append(f"| {t['target']} | {t['zingest']} | {measured} | {goal} | **{t['verdict']}** | {margin} "
                     f"| {t.get('busiest') or '–'} |")
    return lines


def _cpu(results: dict[str, Any]) -> list[str]:
    """Each run's processes by the share of one core they used at the maximum: a process near 100% of a
    core is what held the rate (the gateway, each sink, each worker is one thread where it matters)."""
    lines = ["| system | request | share of one core, from the start of the load to the last row landed |",
             "|---|---|---|"]
    for c in results.get("cases", []):
        if (c.get("max") or {}).get("core_share"):
            rows = "1 row" if c["size"] == 1 else f"{c['size']:,} rows"
            lines.append(f"| {c['label']} | {rows} | {busiest(c, top=8)} |")
    return lines


def _soak(results: dict[str, Any]) -> list[str]:
    s = results.get("soak") or {}
    if not s:
        return ["Not run."]
    if s.get("status") != "ok":
        return [f"**{s.get('status')}**: {s.get('problem')}"]
    lines = [(f"{s['label']} at {s['offered_rate']:,.0f} single-row requests/s (half its measured maximum) for "
             f"{s['seconds']:.0f} s; RSS of each process sampled every second. Growth counts after a warm-up of "
             f"{s['warmup_s']:.0f} s: the time the gateway's job store takes to fill with the final statuses it keeps "
             "(`gateway.status_capacity`), within 20-50% of the soak. "
             f"Every row committed ({s['rows_landed']:,}); ack p99 {ms(s['ack']['p99_ms'])} ms, "
             f"commit p99 {ms((s.get('commit') or {}).get('p99_ms'))} ms."), "",
             "| process | RSS after warm-up MiB | RSS at end MiB | peak MiB | growth |", "|---|---|---|---|---|"]
    series = s.get("rss_mib") or []
    after = [p for p in series if p["t"] >= s["warmup_s"]]
    for name, g in sorted((s.get("growth") or {}).items()):
        peak = max(p[name] for p in series)
        lines.append(f"| {name} | {after[0][name]:.1f} | {after[-1][name]:.1f} | {peak:.1f} | "
                     f"{'–' if g is None else f'{g:+.1%}'} |")
    return lines


def _fsync(probe: dict[str, float] | None) -> str:
    if not probe:
        return "- disk: not probed"
    return (f"- disk (the folder holding PostgreSQL's data and zingest's journal): fsync of a 300-byte append "
            f"p50 {probe['p50_ms']:.2f} ms, p99 {probe['p99_ms']:.2f} ms, max {ms(probe['max_ms'])} ms "
            f"({probe['fsyncs']:,} fsyncs in {probe['seconds']:g} s before the run)")


def _machine(results: dict[str, Any]) -> list[str]:
    m, pg, rd = results["machine"], results.get("postgres", {}), results.get("redis")
    lines = [f"- {m['cores']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, {m['os']}, Python {m['python']}",
             f"- PostgreSQL {pg.get('server_version')} ({pg.get('where')}): "
             + ", ".join(f"{k} = {v}" for k, v in pg.items() if k not in ("server_version", "where")),
             _fsync(results.get("disk_fsync")),
             f"- Redis: {rd['version']} ({rd['origin']}; save = '{rd['save']}', appendonly = {rd['appendonly']})"
             if rd else "- Redis: not available in this run",
             "- " + ", ".join(f"{k} {v}" for k, v in sorted(m["packages"].items())),
             f"- run on {m['date']}, {results['mode']} mode"
             + (f" (only {', '.join(results['only'])})" if results.get("only") else "")
             + f", {results.get('wall_s', 0) / 60:.1f} minutes; load average at the start "
             + ", ".join(f"{x:g}" for x in m.get("load_average", []))]
    return lines


HOW = """\
- **Processes.** Every system runs as its own processes, started and stopped by the benchmark: the
  alternatives are scripts in `benchmarks/servers/` (aiohttp on uvloop, like zingest's gateway); zingest is
  `python -m zingest gateway` plus N `python -m zingest sink`, configured by `ZINGEST_*` variables only
  (defaults otherwise: `sink.batch_rows` 5000, `sink.batch_linger_ms` 20). All of them, the load generator and
  PostgreSQL share this one machine; traffic is loopback only.
- **Rows.** The same generated rides (`zingest.gen.rides`, seed {seed}, a pool of {pool:,} rows cycled, each row
  its own id) go to a table shaped like `public.rides` plus `sent_at` (set by the client) and
  `landed_at DEFAULT clock_timestamp()`, without a primary key so that a duplicate stays visible.
- **Load generator.** Our own asyncio + aiohttp client (uvloop), one process: a closed loop with
  {conc_single} requests in flight (single rows) or {conc_batch} (1,000-row bodies) for {max_s:g} s gives the
  maximum; an open loop at a fixed rate, half the maximum the system sustained (the lower of requests acknowledged
  and rows committed per second), for {half_s:g} s gives the latencies. Open-loop latencies count from when each
  request was due. 503s are retried with the same rows. JSON bodies (an object, or an array of 1,000), CSV for
  the CSV lane.
- **Rows/s committed** is measured in PostgreSQL: after the load, `count(*)` is polled until every acknowledged
  row is there; the run passes only if count, distinct ids and the id checksum equal what was acknowledged
  (lost or duplicated rows → FAILED, never a figure). The rate is rows / (last `landed_at` − first `sent_at`).
  `requests/s` is acknowledgements per second at the client.
- **Commit latency** is `landed_at − sent_at` per row, percentiles in SQL, at half load. `landed_at` is the
  instant the row was written inside its transaction, so the commit itself (a WAL flush) comes a little later.
- **Acknowledgement latency** is client-side, from request due (open loop) or sent (closed loop) to the answer.
- **CPU s / 100k rows**: user + system CPU of the system's own processes (children included; for the original
  design the Redis server too) from before the maximum load until its last row landed, per 100,000 rows;
  PostgreSQL's CPU (postmaster and all backends) is reported apart. **Peak RSS**: the largest sum of the
  system's processes' RSS, sampled every 0.2 s.
- **COPY ceiling**: one (or two parallel) processes, each one session, `COPY ... FROM STDIN` with psycopg 3
  `write_row`, rows built from the same pool; no HTTP. Beside 1,000-row requests, transactions of 5,000 rows
  (zingest's `sink.batch_rows`; of 1,000, 5,000 and 20,000 the fastest here); beside single rows, one row per
  transaction (what a commit per row costs).
- **Bare aiohttp** reads the body and answers 202 with a job id; it lands nothing, so its row figure is what
  was acknowledged. With single rows, the client's CPU is the limit here (see notes).
"""


def _notes(results: dict[str, Any]) -> list[str]:
    notes = []
    for c in results.get("cases", []):
        load = (c.get("max") or {}).get("load") or {}
        if load.get("elapsed_s") and load.get("client_cpu_s", 0) / load["elapsed_s"] > 0.85:
            notes.append(f"- {c['label']} x{c['size']}: the load generator used "
                         f"{load['client_cpu_s'] / load['elapsed_s']:.0%} of a core at the maximum, so the client "
                         "set (or shared) the pace.")
        mc = (c.get("max") or {}).get("machine_cpu")
        span = (mc or {}).get("wall_s", 0) * (results["machine"]["cores"] or 1)
        if mc and span and (mc["other_s"] + mc["steal_s"]) / span > 0.10:
            notes.append(f"- {c['label']} x{c['size']}: during the maximum, processes outside the benchmark took "
                         f"{mc['other_s'] / span:.0%} of the machine's CPU and the hypervisor stole "
                         f"{mc['steal_s'] / span:.0%}.")
        codes = {k: v for k, v in (c.get("exit_codes") or {}).items() if v not in (0, None)}
        if codes:
            notes.append(f"- {c['label']} x{c['size']}: exit codes at stop {codes}.")
    for s in results.get("skipped", []):
        notes.append(f"- {s['system']} skipped: {s['reason']}.")
    return notes or ["- none"]


def markdown(results: dict[str, Any]) -> str:
    t = results["timing"]
    out = [f"# zingest benchmarks ({results['mode']} run)", "",
           ("Every figure comes from one run on one machine, against one PostgreSQL and the same generated rows; "
            "the targets are ratios within the run. Generated by `python -m benchmarks`; do not edit by hand."), ""]
    for size in (1000, 1):
        cases = [c for c in results.get("cases", []) if c["size"] == size]
        if cases:
            out += [f"## {SIZE_TITLES[size]}", "", HEADER, *("| " + _row(c) + " |" for c in cases), ""]
    out += ["## Targets (issue 5)", "", *_targets(results), ""]
    if ANALYSIS.exists():
        out += [ANALYSIS.read_text(encoding="utf-8").rstrip(), ""]
    out += [
            "## Where the CPU went at the maximum", "", *_cpu(results), "", "## Soak", "", *_soak(results), ""]
    plots = results.get("plots") or {}
    if plots:
        out += ["## Plots", "", *(f"![{name}]({file})" for name, file in plots.items()), ""]
    out += ["## Machine", "", *_machine(results), "", "## Notes", "", *_notes(results), "",
            "## How measured", "",
            HOW.format(seed=results["seed"], pool=results["pool_rows"], conc_single=t["concurrency"]["1"],
                       conc_batch=t["concurrency"]["1000"], max_s=t["max_s"], half_s=t["half_s"])]
    return "\n".join(out)


def summary(results: dict[str, Any]) -> str:
    """A few lines for the terminal: each target's verdict."""
    lines = [f"{t['verdict']:4} {t['target']} [{t['zingest']}]" for t in results.get("targets", [])]
    return "\n".join(lines)
