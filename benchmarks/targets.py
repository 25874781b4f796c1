"""Issue 5's targets, judged as ratios within one run: each measured figure beside its target.

"zingest" is judged twice: as shipped (``gateway.durability = "disk"``, two
sinks, JSON: what ``zingest up`` runs; in a quick run, the one configuration
measured) and in the best configuration measured for that figure, so neither
hides the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DEFAULT_ZINGEST = "zingest-disk-2"
SOAK_GROWTH_MAX = 0.10


def find(results: dict[str, Any], system: str, size: int) -> dict[str, Any] | None:
    return next((r for r in results.get("cases", []) if r["system"] == system and r["size"] == size), None)


def ok_cases(results: dict[str, Any], size: int, group: str) -> list[dict[str, Any]]:
    return [r for r in results.get("cases", []) if r["size"] == size and r["group"] == group and r["status"] == "ok"]


def rows_per_s(case: dict[str, Any] | None) -> float | None:
    return None if case is None or case["status"] != "ok" else case["max"].get("rows_per_s_committed")


def requests_per_s(case: dict[str, Any] | None) -> float | None:
    return None if case is None or case["status"] != "ok" else case["max"].get("requests_per_s")


def half(case: dict[str, Any], *path: str) -> float | None:
    value: Any = case.get("half") or {}
    for key in path:
        value = (value or {}).get(key)
    return value


def busiest(case: dict[str, Any], top: int = 3) -> str:
    """The processes that used the most CPU at the maximum, as shares of one core: where a bottleneck is."""
    share = {k: v for k, v in ((case.get("max") or {}).get("core_share") or {}).items() if v is not None}
    ranked = sorted(share.items(), key=lambda kv: -kv[1])[:top]
    return ", ".join(f"{name} {value:.0%}" for name, value in ranked)


def _judge(name: str, measured: float | None, target: float, higher_is_better: bool, unit: str,
           config: str, against: str, why: str = "") -> dict[str, Any]:
    if measured is None:
        return {"target": name, "zingest": config, "against": against, "measured": None, "goal": target,
                "unit": unit, "verdict": "n/a", "margin": None, "busiest": why}
    passed = measured >= target if higher_is_better else measured <= target
    # How far past (positive) or short of (negative) the target, as a fraction of the target.
    margin = (measured - target) / target if higher_is_better else (target - measured) / target
    return {"target": name, "zingest": config, "against": against, "measured": measured, "goal": target,
            "unit": unit, "verdict": "PASS" if passed else "MISS", "margin": margin, "busiest": why}


def _configs(results: dict[str, Any], size: int, score: Callable[[dict[str, Any]], float | None],
             higher_is_better: bool) -> list[dict[str, Any]]:
    """The shipped configuration, then the best other one by ``score`` (if it differs)."""
    cases = [c for c in ok_cases(results, size, "zingest") if score(c) is not None]
    default = find(results, DEFAULT_ZINGEST, size) or (cases[0] if cases else None)
    picked = [default] if default is not None else []
    if cases:
        best = (max if higher_is_better else min)(cases, key=lambda c: score(c))  # type: ignore[arg-type,return-value]
        if best is not default:
            picked.append(best)
    return picked


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def ratio(name: str, size: int, reference: str, goal: float, score: Callable[[dict[str, Any]], float | None],
              ref_value: float | None) -> None:
        for c in _configs(results, size, score, True):
            value = score(c)
            measured = value / ref_value if value is not None and ref_value else None
            out.append(_judge(name, measured, goal, True, "×", c["system"], reference, busiest(c)))

    copy1 = rows_per_s(find(results, "copy-1", 1000))
    ratio("1,000-row requests: rows/s committed ≥ 60% of one-session COPY", 1000, "copy-1", 0.60,
          rows_per_s, copy1)
    bare = requests_per_s(find(results, "bare", 1))
    ratio("single-row requests: requests/s, every row committed, ≥ 85% of bare aiohttp", 1, "bare", 0.85,
          rows_per_s, bare)
    ratio("1,000-row requests: rows/s committed ≥ 10× the original design", 1000, "redis", 10.0,
          rows_per_s, rows_per_s(find(results, "redis", 1000)))
    ratio("1,000-row requests: rows/s committed ≥ 5× naive direct INSERT", 1000, "naive", 5.0,
          rows_per_s, rows_per_s(find(results, "naive", 1000)))
    for size in (1, 1000):
        what = "single-row" if size == 1 else "1,000-row"
        for label, path, goal in ((f"half load, {what}: acknowledgement p99 ≤ 10 ms", ("load", "ack", "p99_ms"), 10.0),
                                  (f"half load, {what}: commit latency p99 ≤ 100 ms", ("commit", "p99_ms"), 100.0)):
            def score(c: dict[str, Any], path: tuple[str, ...] = path) -> float | None:
                return half(c, *path)

            for c in _configs(results, size, score, False):
                out.append(_judge(label, score(c), goal, False, "ms", c["system"], "—"))
    soak = results.get("soak") or {}
    growth = [g for g in (soak.get("growth") or {}).values() if g is not None]
    out.append(_judge("soak: RSS growth of every zingest process after warm-up < 10%",
                      max(growth) if growth and soak.get("status") == "ok" else None, SOAK_GROWTH_MAX, False,
                      "fraction", soak.get("system", "?"), "—"))
    return out
