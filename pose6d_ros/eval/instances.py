"""`instances.csv`: one row per evaluated target, written by `pose6d eval` and paired by
`pose6d compare`.

A row holds the target's key (scene, image, place in scene_gt.json), its object, whether a
pose was found, and its errors: ADD(-S) over the diameter, MSSD, MSPD, rotation and
translation error, plus its own share of AR_MSSD and AR_MSPD (the fraction of BOP's ten
thresholds it passes), so that the mean of a column over any subset is that subset's
figure. Failed targets carry `inf` errors and zero shares.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pose6d_ros.eval import metrics

if TYPE_CHECKING:
    from pose6d_ros.eval.evaluate import EvalReport

INSTANCES_CSV = "instances.csv"
KEY_FIELDS = ["scene_id", "im_id", "gt_index"]
ERROR_FIELDS = ["add_rel", "mssd_mm", "mspd_px", "re_deg", "te_mm", "ar_mssd", "ar_mspd"]
FIELDS = [*KEY_FIELDS, "object", "found", "score", *ERROR_FIELDS]


@dataclass(frozen=True)
class Instances:
    """The columns of an `instances.csv`: `keys (n, 3)` int (scene, image, gt index),
    `objects (n,)` names, `found (n,)` bool, and `errors[field] (n,)` float64."""

    path: Path
    keys: np.ndarray
    objects: np.ndarray
    found: np.ndarray
    errors: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.keys)


def instance_ar(report: EvalReport, diameters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each target's share `(n,)` of AR_MSSD and of AR_MSPD: the fraction of the BOP
    thresholds its error passes."""
    lab = np.asarray(report.labels, int)
    mssd = np.asarray(report.mssd, np.float64)[:, None]
    mspd = np.asarray(report.mspd, np.float64)[:, None]
    thr_mssd = metrics.MSSD_THRESHOLDS.numpy()[None] * diameters[lab][:, None]
    thr_mspd = metrics.MSPD_THRESHOLDS.numpy()[None] * (report.image_width / 640.0)
    return (mssd < thr_mssd).mean(1), (mspd < thr_mspd).mean(1)


def write_instances_csv(path: str | Path, report: EvalReport, diameters: np.ndarray) -> None:
    """One row per target of `report`; `diameters (num_objects,)` in metres."""
    lab = np.asarray(report.labels, int)
    ar_mssd, ar_mspd = instance_ar(report, diameters) if len(lab) else ([], [])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        for i, label in enumerate(lab.tolist()):
            w.writerow([report.scene_ids[i], report.im_ids[i], report.gt_index[i],
                        report.objects[label], int(report.ok[i]), f"{report.scores[i]:.4f}",
                        f"{report.add[i] / diameters[label]:.6g}",
                        f"{report.mssd[i] * 1e3:.6g}", f"{report.mspd[i]:.6g}",
                        f"{report.re[i]:.6g}", f"{report.te[i] * 1e3:.6g}",
                        f"{ar_mssd[i]:.2f}", f"{ar_mspd[i]:.2f}"])


def read_instances_csv(path: str | Path) -> Instances:
    """Read an `instances.csv` (or the one in an eval output folder `path`)."""
    path = Path(path)
    if path.is_dir():
        path = path / INSTANCES_CSV
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows, header = list(reader), reader.fieldnames or []
    except OSError as exc:
        raise FileNotFoundError(f"{path}: cannot read: {exc.strerror}") from exc
    missing = [k for k in FIELDS if k not in header]
    if missing:
        raise ValueError(f"{path}: not a `pose6d eval` instances.csv (no column "
                         f"{', '.join(missing)})")
    try:
        keys = np.array([[int(r[k]) for k in KEY_FIELDS] for r in rows], np.int64)
        errors = {k: np.array([float(r[k]) for r in rows], np.float64) for k in ERROR_FIELDS}
        found = np.array([r["found"] == "1" for r in rows], bool)
    except ValueError as exc:
        raise ValueError(f"{path}: bad value: {exc}") from exc
    return Instances(path, keys.reshape(-1, 3), np.array([r["object"] for r in rows]),
                     found, errors)
