"""`pose6d compare`: two evaluations of the same targets, paired, with bootstrap intervals.

Each figure is computed for both runs and for their difference A - B; the 95 % interval
of the difference comes from resampling whole images with replacement (targets of one
image share its lighting and clutter, so they are not independent draws), the same draw
for A and B. A difference whose interval excludes zero is called shown; otherwise the two
runs are not told apart on this data. A target a run found no pose for counts as an
infinite error of that run (unlike `pose6d eval`'s medians, which skip it), so a run
cannot look better by failing more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pose6d_ros.eval.instances import Instances


@dataclass(frozen=True)
class Figure:
    """How one figure is computed from a run's columns, and which way is better."""

    name: str
    unit: str  # "%" prints x100
    stat: Callable[[dict[str, np.ndarray]], float]
    higher_is_better: bool


FIGURES = [
    Figure("ADD(-S) < 0.1d", "%", lambda e: float((e["add_rel"] < 0.1).mean()), True),
    Figure("AR_MSSD", "", lambda e: float(e["ar_mssd"].mean()), True),
    Figure("AR_MSPD", "", lambda e: float(e["ar_mspd"].mean()), True),
    Figure("AR", "", lambda e: float((e["ar_mssd"] + e["ar_mspd"]).mean() / 2), True),
    Figure("median rotation error", "deg", lambda e: float(np.median(e["re_deg"])), False),
    Figure("median translation error", "mm", lambda e: float(np.median(e["te_mm"])), False),
]
WIN_COLUMNS = {"rotation error": "re_deg", "translation error": "te_mm",
               "ADD(-S)": "add_rel"}


@dataclass(frozen=True)
class Row:
    """One figure of both runs and the interval of their difference."""

    name: str
    unit: str
    a: float
    b: float
    diff: float
    low: float
    high: float
    verdict: str  # "A better", "B better" or "not shown"


@dataclass(frozen=True)
class Comparison:
    """The paired figures of runs `a` and `b` (names), on `targets` targets in `images`
    images, with `resamples` image resamples; `wins[column]`: the fraction of targets
    where A's error is lower (ties count half)."""

    a: str
    b: str
    targets: int
    images: int
    resamples: int
    rows: list[Row]
    wins: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pair(a: Instances, b: Instances) -> tuple[np.ndarray, np.ndarray]:
    """Row orders `(n,)` of `a` and `b` that put the same targets side by side; an error
    unless both evaluated exactly the same targets."""
    ka = {tuple(k): i for i, k in enumerate(a.keys.tolist())}
    kb = {tuple(k): i for i, k in enumerate(b.keys.tolist())}
    if len(ka) != len(a) or len(kb) != len(b):
        raise ValueError(f"{a.path if len(ka) != len(a) else b.path}: a target appears twice")
    if ka.keys() != kb.keys():
        raise ValueError(f"{a.path} has {len(ka)} targets and {b.path} {len(kb)}, "
                         f"{len(ka.keys() & kb.keys())} shared: evaluate both on the same "
                         "data and split")
    order = sorted(ka)
    return np.array([ka[k] for k in order]), np.array([kb[k] for k in order])


def _differences(ea: dict[str, np.ndarray], eb: dict[str, np.ndarray]) -> list[float]:
    return [fig.stat(ea) - fig.stat(eb) for fig in FIGURES]


def compare(a: Instances, b: Instances, *, names: tuple[str, str] = ("A", "B"),
            resamples: int = 2000, seed: int = 0, level: float = 0.95) -> Comparison:
    """Pair `a` and `b` and compute every figure of `FIGURES`, its difference and the
    `level` interval of the difference over `resamples` image resamples."""
    ia, ib = pair(a, b)
    ea = {k: v[ia] for k, v in a.errors.items()}
    eb = {k: v[ib] for k, v in b.errors.items()}
    images, image_of = np.unique(a.keys[ia, :2], axis=0, return_inverse=True)
    image_of = image_of.reshape(-1)
    members = [np.flatnonzero(image_of == i) for i in range(len(images))]
    rng = np.random.default_rng(seed)
    draws = [np.concatenate([members[j] for j in rng.integers(0, len(members), len(members))])
             for _ in range(resamples)] if len(members) else []
    boot = np.array([_differences({k: v[d] for k, v in ea.items()},
                                  {k: v[d] for k, v in eb.items()}) for d in draws]
                    ).reshape(len(draws), len(FIGURES))
    tail = (1 - level) / 2 * 100
    rows = []
    for fig, diffs in zip(FIGURES, boot.T, strict=True):
        va, vb = fig.stat(ea), fig.stat(eb)
        diffs = diffs[np.isfinite(diffs)]
        low, high = np.percentile(diffs, [tail, 100 - tail]) if len(diffs) else (np.nan,
                                                                                 np.nan)
        better_a = low > 0 if fig.higher_is_better else high < 0
        better_b = high < 0 if fig.higher_is_better else low > 0
        verdict = f"{names[0]} better" if better_a else f"{names[1]} better" if better_b \
            else "not shown"
        rows.append(Row(fig.name, fig.unit, va, vb, va - vb, float(low), float(high), verdict))
    wins = {name: float(((ea[col] < eb[col]) + 0.5 * (ea[col] == eb[col])).mean())
            if len(ia) else float("nan") for name, col in WIN_COLUMNS.items()}
    return Comparison(names[0], names[1], len(ia), len(images), resamples, rows, wins)


def _fmt(value: float, unit: str, signed: bool = False) -> str:
    if not np.isfinite(value):
        return str(value)
    sign = "+" if signed else ""
    if unit == "%":
        return f"{100 * value:{sign}.1f} %"
    if unit:  # whole units, with a decimal below 10 so that a small sign stays readable
        return f"{value:{sign}.{1 if abs(value) < 10 else 0}f} {unit}"
    return f"{value:{sign}.3f}"


def format_text(c: Comparison) -> str:
    """A plain table for the terminal."""
    lines = [f"A = {c.a}, B = {c.b}: {c.targets} paired targets in {c.images} images; "
             f"intervals from {c.resamples} image resamples",
             f"  {'figure':<26}{'A':>10}{'B':>10}{'A - B':>10}   95 % interval        verdict"]
    for r in c.rows:
        interval = f"[{_fmt(r.low, r.unit, True)}, {_fmt(r.high, r.unit, True)}]"
        lines.append(f"  {r.name:<26}{_fmt(r.a, r.unit):>10}{_fmt(r.b, r.unit):>10}"
                     f"{_fmt(r.diff, r.unit, True):>10}   {interval:<20} {r.verdict}")
    lines.append("  A's error is lower on " + ", ".join(
        f"{100 * v:.0f} % of targets ({k})" for k, v in c.wins.items()))
    return "\n".join(lines)


def format_markdown(c: Comparison) -> str:
    """A Markdown table (README-ready) of the same figures."""
    lines = [f"| figure | {c.a} | {c.b} | difference, 95 % interval | verdict |",
             "|---|---|---|---|---|"]
    for r in c.rows:
        lines.append(f"| {r.name} | {_fmt(r.a, r.unit)} | {_fmt(r.b, r.unit)} | "
                     f"{_fmt(r.diff, r.unit, True)} [{_fmt(r.low, r.unit, True)}, "
                     f"{_fmt(r.high, r.unit, True)}] | {r.verdict} |")
    lines.append(f"| lower error than {c.b} | " + "; ".join(
        f"{k} {100 * v:.0f} %" for k, v in c.wins.items()) + " | | | |")
    return "\n".join(lines)


def plot_comparison(a: Instances, b: Instances, names: tuple[str, str],
                    path: str | Path) -> None:
    """Cumulative curves of rotation error and ADD(-S)/diameter for both runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, col, top, label in ((axes[0], "re_deg", 180.0, "rotation error (deg)"),
                                (axes[1], "add_rel", 1.0, "ADD(-S) / diameter")):
        grid = np.linspace(0, top, 181)
        for run, name in ((a, names[0]), (b, names[1])):
            err = run.errors[col]
            ax.plot(grid, [(err < g).mean() for g in grid], label=name)
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of targets below")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[1].axvline(0.1, color="grey", lw=0.8)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

