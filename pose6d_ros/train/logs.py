"""Training logs: a CSV of scalars per logged step, and PNG plots of their curves."""

from __future__ import annotations

import csv
from pathlib import Path


class CsvLog:
    """Appends rows of named scalars to a CSV file (resuming keeps the old rows)."""

    def __init__(self, path: str | Path, fields: list[str]) -> None:
        self.path, self.fields = Path(path), fields
        if not self.path.exists():
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(fields)

    def write(self, row: dict[str, float]) -> None:
        """Append one row; missing fields stay empty."""
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(k)) for k in self.fields])


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def read_log(path: str | Path) -> dict[str, list[float]]:
    """Columns of a CsvLog file; empty cells become NaN."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {k: [float(r[k]) if r[k] not in ("", None) else float("nan") for r in rows]
            for k in rows[0]}


def plot_curves(csv_path: str | Path, png_path: str | Path, *, x: str = "step",
                curves: list[str], title: str = "") -> None:
    """A PNG with one panel per curve against `x`, raw and smoothed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    data = read_log(csv_path)
    shown = [c for c in curves if c in data and np.isfinite(data[c]).any()]
    if not data or not shown:
        return
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3), squeeze=False)
    xs = np.asarray(data[x])
    for ax, name in zip(axes[0], shown, strict=True):
        ys = np.asarray(data[name])
        ok = np.isfinite(ys)
        ax.plot(xs[ok], ys[ok], lw=0.6, alpha=0.4, color="C0")
        if ok.sum() >= 10:
            k = max(2, ok.sum() // 20)
            smooth = np.convolve(ys[ok], np.ones(k) / k, mode="valid")
            ax.plot(xs[ok][k - 1:], smooth, lw=1.5, color="C0")
        ax.set_title(name)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
