"""PNG plots from the results (matplotlib, Agg backend): throughput, latency, soak RSS over time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after use(): the backend is chosen before pyplot loads
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from benchmarks.targets import half

SIZES = ((1000, "1,000-row requests"), (1, "single-row requests"))


def _short(v: float, _: Any = None) -> str:
    """Tick labels that fit side by side: 500, 2k, 50k, 1M, 0.5."""
    if v >= 1_000_000:
        return f"{v / 1_000_000:g}M"
    if v >= 1_000:
        return f"{v / 1_000:g}k"
    return f"{v:g}"


def _log_axis(ax: Any) -> None:
    """A log x axis labelled at 1, 2 and 5 times each power of ten (other ticks unlabelled)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(_short))
    ax.xaxis.set_minor_formatter(NullFormatter())


COLORS = {"ceiling": "#9e9e9e", "naive": "#e07b39", "original": "#c0392b", "zingest": "#2e86c1"}


def _throughput(results: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.5))
    for ax, (size, title) in zip(axes, SIZES):
        cases = [c for c in results["cases"] if c["size"] == size]
        labels, values, colors, hatches = [], [], [], []
        for c in cases:
            mx = c.get("max") or {}
            value = mx.get("rows_per_s_committed")
            hatch = ""
            if c["system"] == "bare" and mx.get("requests_per_s"):
                value, hatch = mx["requests_per_s"] * size, "//"  # acknowledged, nothing lands
            labels.append(c["label"] + ("" if c["status"] == "ok" else " (FAILED)"))
            values.append(value if c["status"] == "ok" and value else 0)
            colors.append(COLORS[c["group"]])
            hatches.append(hatch)
        y = range(len(labels))
        bars = ax.barh(list(y), values, color=colors)
        for bar, hatch in zip(bars, hatches):
            bar.set_hatch(hatch)
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:,.0f}" if v else " –", va="center", fontsize=8)
        ax.set_yticks(list(y), labels, fontsize=8)
        ax.invert_yaxis()
        _log_axis(ax)
        ax.set_xlabel("rows/s, log scale")
        ax.set_title(title)
    fig.suptitle("Throughput by system: rows committed per second, measured in PostgreSQL\n"
                 "(bare aiohttp, hatched: rows acknowledged; it lands nothing)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _latency(results: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.5))
    series = (("ack p50", ("load", "ack", "p50_ms"), "#aed6f1"), ("ack p99", ("load", "ack", "p99_ms"), "#2e86c1"),
              ("commit p50", ("commit", "p50_ms"), "#f5cba7"), ("commit p99", ("commit", "p99_ms"), "#d35400"))
    for ax, (size, title) in zip(axes, SIZES):
        cases = [c for c in results["cases"] if c["size"] == size and c.get("half")]
        width = 0.2
        for j, (name, key, color) in enumerate(series):
            values = [half(c, *key) or 0 for c in cases]
            ax.barh([i + (j - 1.5) * width for i in range(len(cases))], values, height=width, color=color,
                    label=name)
        ax.set_yticks(range(len(cases)), [c["label"] for c in cases], fontsize=8)
        ax.invert_yaxis()
        _log_axis(ax)
        ax.axvline(10, color="#2e86c1", linestyle=":", linewidth=1)
        ax.axvline(100, color="#d35400", linestyle=":", linewidth=1)
        ax.set_xlabel("ms, log scale")
        ax.set_title(f"{title}, at half each system's maximum")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=9)
    fig.suptitle("Latency by system: acknowledgement (client) and commit (landed_at − sent_at, in SQL)\n"
                 "dotted: the targets, ack p99 10 ms and commit p99 100 ms")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _soak(results: dict[str, Any], path: Path) -> bool:
    soak = results.get("soak") or {}
    series = soak.get("rss_mib") or []
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(10, 5))
    names = [k for k in series[0] if k != "t"]
    for name in names:
        ax.plot([p["t"] for p in series], [p[name] for p in series], label=name)
    ax.axvline(soak["warmup_s"], color="grey", linestyle="--", linewidth=1, label="end of warm-up")
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Soak: {soak['label']} at {soak['offered_rate']:,.0f} requests/s (half load), RSS per process")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_all(results: dict[str, Any], out: Path) -> dict[str, str]:
    """Write the plots into ``out``; {title: file name} of those written."""
    written = {}
    if results.get("cases"):
        _throughput(results, out / "throughput.png")
        written["throughput by system"] = "throughput.png"
        _latency(results, out / "latency.png")
        written["latency by system"] = "latency.png"
    if _soak(results, out / "soak_rss.png"):
        written["soak RSS over time"] = "soak_rss.png"
    return written
