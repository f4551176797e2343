"""What the report shows, computed from the store's rows: per-variant statistics and the verdict.

Rows come from runs of different versions of modelshrink, so every figure is looked up by
name and may be missing: a missing figure is `None` here and "—" on the page, never 0.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

# What "within 1 point of the baseline" means: one percentage point of test accuracy.
WITHIN = 0.01


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation of one figure over a variant's successful seeds."""

    mean: float
    std: float
    n: int


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def stat_of(values: list[Any]) -> Stat | None:
    """Stat of the values, or None unless every one is a finite number (a partial mean would mislead)."""
    nums = [_number(v) for v in values]
    if not nums or any(v is None for v in nums):
        return None
    clean = [v for v in nums if v is not None]
    return Stat(statistics.fmean(clean), statistics.stdev(clean) if len(clean) > 1 else 0.0, len(clean))


@dataclass
class VariantView:
    name: str
    chain: list[str]  # technique kinds, in order; empty for the baseline itself
    start: str  # "baseline" or "scratch"
    ok: list[dict[str, Any]] = field(default_factory=list)  # successful rows, one per seed
    failed: list[dict[str, Any]] = field(default_factory=list)  # rows with status != ok
    compression: Stat | None = None  # baseline file bytes / this variant's, set by build_views

    def stat(self, key: str) -> Stat | None:
        return stat_of([r.get(key) for r in self.ok]) if self.ok else None

    @property
    def chain_text(self) -> str:
        if not self.chain:
            return "baseline (no technique)" if self.start == "baseline" else "from scratch (no technique)"
        return " → ".join(self.chain) + (" (from scratch)" if self.start == "scratch" else "")


def _variant_cfg(row: dict[str, Any]) -> dict[str, Any]:
    cfg = row.get("config")
    variant = cfg.get("variant") if isinstance(cfg, dict) else None
    return variant if isinstance(variant, dict) else {}


def build_views(rows: list[dict[str, Any]]) -> list[VariantView]:
    """One view per variant, in the store's order, with compression × against the baseline."""
    views: dict[str, VariantView] = {}
    for row in rows:
        name = str(row.get("variant", "?"))
        if name not in views:
            vcfg = _variant_cfg(row)
            steps = vcfg.get("steps") if isinstance(vcfg.get("steps"), list) else []
            chain = [str(s.get("kind", "?")) if isinstance(s, dict) else str(s) for s in steps or []]
            views[name] = VariantView(name, chain, str(vcfg.get("start", "baseline")))
        (views[name].ok if row.get("status") == "ok" else views[name].failed).append(row)
    out = list(views.values())
    base = baseline_of(out)
    for v in out:
        v.compression = _compression(v, base)
    return out


def baseline_of(views: list[VariantView]) -> VariantView | None:
    """The trained baseline: a variant with no technique that starts from it (preferably named "baseline")."""
    plain = [v for v in views if not v.chain and v.start == "baseline" and v.ok]
    named = [v for v in plain if v.name == "baseline"]
    found = named or plain
    return found[0] if found else None


def _compression(v: VariantView, base: VariantView | None) -> Stat | None:
    """compression_x from the rows when they carry it, else baseline file bytes / this file's, seed by seed."""
    own = v.stat("compression_x")
    if own is not None or base is None:
        return own
    base_bytes = {r["seed"]: r.get("file_bytes") for r in base.ok}
    ratios: list[Any] = []
    for r in v.ok:
        b, f = _number(base_bytes.get(r["seed"])), _number(r.get("file_bytes"))
        ratios.append(b / f if b is not None and f else None)
    return stat_of(ratios)


def best_variant(views: list[VariantView]) -> VariantView | None:
    """The variant with the highest mean test accuracy (the one whose classes the report details)."""
    scored = [(s.mean, v) for v in views if (s := v.stat("test_accuracy")) is not None]
    return max(scored, key=lambda t: t[0])[1] if scored else None


# -- the verdict -------------------------------------------------------------------------------
def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit, size in (("MB", 1024**2), ("KB", 1024)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,.0f} B"


def fmt_pct(s: Stat | None) -> str:
    if s is None:
        return "—"
    return f"{100 * s.mean:.2f}%" + (f" ± {100 * s.std:.2f}" if s.n > 1 else "")


def fmt_ms(s: Stat | None) -> str:
    return "—" if s is None else f"{s.mean:.3f} ms"


@dataclass(frozen=True)
class Verdict:
    headline: str  # e.g. "Smallest within 1 point of the baseline"
    variant: str | None  # the pick, shown in bold; None when there is none
    text: str  # what it costs, in plain words


def _cost(v: VariantView, base: VariantView) -> str:
    acc, b_acc = v.stat("test_accuracy"), base.stat("test_accuracy")
    size, b_size = v.stat("file_bytes"), base.stat("file_bytes")
    lat, b_lat = v.stat("latency_ms_p50"), base.stat("latency_ms_p50")
    parts = []
    if size is not None:
        ratio = ""
        if v.compression is not None and v is not base:
            x = v.compression.mean
            ratio = f" ({x:.2f}× smaller" if x >= 1 else f" ({1 / x:.2f}× larger"
            ratio += f" than the baseline's {fmt_bytes(b_size.mean if b_size else None)})"
        parts.append(f"file {fmt_bytes(size.mean)}{ratio}")
    if acc is not None and b_acc is not None:
        delta = 100 * (acc.mean - b_acc.mean)
        parts.append(f"test accuracy {fmt_pct(acc)}" + ("" if v is base else f", {delta:+.2f} points vs the baseline"))
        if v is not base and acc.n > 1 and abs(delta) < 100 * max(acc.std, b_acc.std):
            parts.append("the difference is within one standard deviation over seeds")
    if lat is not None:
        speed = (
            f" ({b_lat.mean / lat.mean:.2f}× the baseline's speed)" if b_lat and lat.mean > 0 and v is not base else ""
        )
        parts.append(f"latency {fmt_ms(lat)}{speed}")
    return "; ".join(parts) + "."


def verdict(views: list[VariantView]) -> list[Verdict]:
    """The smallest and the fastest variant within 1 point of the baseline's test accuracy, and their cost."""
    base = baseline_of(views)
    out: list[Verdict] = []
    failed = [v.name for v in views if v.failed]
    b_acc = base.stat("test_accuracy") if base else None
    if base is None or b_acc is None:
        out.append(Verdict("No verdict", None, "The store holds no successful baseline row (a variant with no "
                           "technique), so nothing can be compared with it. Run the baseline variant too."))  # fmt: skip
    else:
        ok = [v for v in views if (a := v.stat("test_accuracy")) is not None and a.mean >= b_acc.mean - WITHIN]
        for headline, key in (("Smallest", "file_bytes"), ("Fastest", "latency_ms_p50")):
            measured = [(s.mean, v) for v in ok if (s := v.stat(key)) is not None]
            title = f"{headline} within 1 point of the baseline's test accuracy"
            if not measured:
                out.append(Verdict(title, None, f"No variant within 1 point has a measured {key}."))
                continue
            pick = min(measured, key=lambda t: t[0])[1]
            note = " No compressed variant beats it within 1 point." if pick is base else ""
            out.append(Verdict(title, pick.name, _cost(pick, base) + note))
    if failed:
        out.append(Verdict("Failed", None, f"{len(failed)} variant(s) failed on some seed: {', '.join(failed)} "
                           "(messages below)."))  # fmt: skip
    return out
