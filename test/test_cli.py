import json
import subprocess
import sys

from pose6d_ros.cli import main


def test_bench_pnp_json(capsys):
    assert main(["bench", "pnp", "--instances", "4", "--points", "50", "--repeats", "1",
                 "--device", "cpu", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"speedup_backward", "speedup_forward", "grad_rel_err"} <= set(r)
    assert r["grad_rel_err"] < 1e-4 and r["baseline_agreement"] < 1e-6


def test_demo_pnp_table(capsys):
    assert main(["demo", "--pnp", "--points", "200"]) == 0
    out = capsys.readouterr().out
    assert "eggbox" in out and "relative error" in out
    assert out.count(" OK ") == 8


def test_objects_check_and_from_bop(tmp_path, capsys):
    from test.conftest import REPO
    out = tmp_path / "objects.yaml"
    assert main(["objects", "from-bop", str(REPO / "models/lmo/models_info.json"), "--out",
                 str(out), "--names", "1=ape,5=can"]) == 0
    assert main(["objects", "check", str(out)]) == 0
    assert "ape" in capsys.readouterr().out


def test_malformed_objects_exit_with_named_error(tmp_path):
    bad = tmp_path / "objects.yaml"
    bad.write_text("objects:\n  - {name: ape, id: one, mesh: x.ply}\n")
    proc = subprocess.run([sys.executable, "-m", "pose6d_ros.cli", "objects", "check",
                           str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "'ape'" in proc.stderr and "'id'" in proc.stderr


def test_shipped_weights_fit_the_budget_and_run_the_readme_demo(tmp_path, capsys):
    """The README's main job, as a fresh clone runs it: shipped weights, bundled photos."""
    from pose6d_ros.core.paths import default_weights
    from pose6d_ros.nets.coordnet import load_coordnet
    from pose6d_ros.nets.detector import load_detector
    from test.conftest import REPO

    shipped = sorted((REPO / "models").glob("*.pt"))
    assert {p.name for p in shipped} == {"detector.pt", "coordnet.pt"}
    assert sum(p.stat().st_size for p in shipped) <= 50 * 2**20
    assert all(p.stat().st_size <= 20 * 10**6 for p in shipped)  # no big files in git
    _, cfg = load_detector(default_weights("detector"))
    assert cfg.num_classes == load_coordnet(default_weights("coordnet")).config.num_objects == 8
    assert main(["demo", "--out", str(tmp_path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "5 real LM-O photographs" in out and "summary:" in out
    assert len(list((tmp_path / "detector" / "overlays").glob("*.png"))) == 5
