"""`pose6d compare`: pairing, intervals, verdicts, files."""

import json

import numpy as np
import pytest

from pose6d_ros.cli import main
from pose6d_ros.eval.compare import compare
from pose6d_ros.eval.evaluate import EvalReport
from pose6d_ros.eval.instances import read_instances_csv, write_instances_csv


def _report(objects, errors: np.ndarray, images: int = 20, per_image: int = 3) -> EvalReport:
    """A report of `images * per_image` targets of the ape whose ADD, MSSD, MSPD (scaled),
    rotation and translation errors are all `errors (n,)` (metres; inf: not found)."""
    n = images * per_image
    ok = np.isfinite(errors)
    return EvalReport(objects=[o.name for o in objects], labels=[0] * n,
                      add=errors.tolist(), mssd=errors.tolist(),
                      mspd=(errors * 1000).tolist(), re=(errors * 1000).tolist(),
                      te=errors.tolist(), ok=ok.tolist(),
                      scene_ids=[0] * n, im_ids=[i // per_image for i in range(n)],
                      gt_index=[i % per_image for i in range(n)], scores=[1.0] * n)


def _write(objects, tmp_path, name: str, errors: np.ndarray):
    folder = tmp_path / name
    folder.mkdir()
    write_instances_csv(folder / "instances.csv", _report(objects, errors),
                        np.array([o.diameter for o in objects]))
    return folder


def test_clearly_better_run_is_shown_better(objects, tmp_path):
    rng = np.random.default_rng(0)
    d = objects[0].diameter
    good = _write(objects, tmp_path, "good", rng.uniform(0.0, 0.08 * d, 60))
    bad = _write(objects, tmp_path, "bad", rng.uniform(0.12 * d, 0.5 * d, 60))
    c = compare(read_instances_csv(good), read_instances_csv(bad), names=("good", "bad"),
                resamples=300)
    assert c.targets == 60 and c.images == 20
    rows = {r.name: r for r in c.rows}
    assert rows["ADD(-S) < 0.1d"].a == 1.0 and rows["ADD(-S) < 0.1d"].b == 0.0
    assert all(r.verdict == "good better" for r in c.rows)
    assert all(r.low <= r.diff <= r.high for r in c.rows)
    assert c.wins == {"rotation error": 1.0, "translation error": 1.0, "ADD(-S)": 1.0}


def test_same_run_shows_no_difference_and_failures_count_as_misses(objects, tmp_path):
    err = np.full(60, 0.001)
    err[::4] = np.inf
    a = read_instances_csv(_write(objects, tmp_path, "a", err))
    assert not a.found[::4].any() and a.found[1::4].all()
    c = compare(a, a, resamples=100)
    for r in c.rows:
        assert r.diff == 0 and r.low == 0 and r.high == 0 and r.verdict == "not shown"
    assert {r.name: r.a for r in c.rows}["ADD(-S) < 0.1d"] == 0.75
    assert set(c.wins.values()) == {0.5}


def test_runs_on_different_targets_are_refused(objects, tmp_path):
    a = read_instances_csv(_write(objects, tmp_path, "a", np.zeros(60)))
    b = read_instances_csv(_write(objects, tmp_path, "b", np.zeros(60)))
    b.keys[0, 1] = 99
    with pytest.raises(ValueError, match="same data"):
        compare(a, b)


def test_compare_cli(objects, tmp_path, capsys):
    d = objects[0].diameter
    a = _write(objects, tmp_path, "with_bpnp", np.full(60, 0.05 * d))
    b = _write(objects, tmp_path, "without", np.full(60, 0.2 * d))
    png = tmp_path / "cmp.png"
    assert main(["compare", str(a), str(b), "--resamples", "50", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "A = with_bpnp, B = without: 60 paired targets in 20 images" in out
    assert "with_bpnp better" in out and png.stat().st_size > 0
    assert main(["compare", str(a), str(b), "--names", "BPnP", "none", "--markdown",
                 "--resamples", "50"]) == 0
    assert "| ADD(-S) < 0.1d | 100.0 % | 0.0 % |" in capsys.readouterr().out
    assert main(["compare", str(a), str(b), "--json", "--resamples", "50"]) == 0
    assert json.loads(capsys.readouterr().out)["targets"] == 60


def test_compare_cli_errors_name_the_file(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "none"), str(tmp_path)]) == 2
    assert "none" in capsys.readouterr().err
    (tmp_path / "instances.csv").write_text("scene_id,im_id\n0,0\n")
    assert main(["compare", str(tmp_path), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "instances.csv: not a `pose6d eval` instances.csv" in err
