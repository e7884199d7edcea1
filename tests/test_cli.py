"""Process-level checks of the console script and the project files."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

root = Path(__file__).resolve().parent.parent
TEST_COMMAND = "nbdev_test --n_workers 1 && pytest -q tests"


def run_cli(*args, cwd, timeout=600):
    environment = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run(["fusion-train", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=environment)


def test_train_writes_run_folder(tmp_path):
    result = run_cli("--n_images", "400", "--epochs", "2", "--batch_size", "32", "--out", "run", "--quiet",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    assert result.stdout.strip().splitlines()[-1] == str(run.resolve())
    for name in ("checkpoint.pt", "metrics.json", "reconstructions.png", "samples.png", "loss.png", "history.json"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["mse_sum_per_image"] == pytest.approx(metrics["mse_per_pixel"] * 49152)
    assert metrics["score_per_pixel"] == pytest.approx(metrics["mse_per_pixel"] / metrics["probe_accuracy"])
    assert metrics["mse_per_pixel"] < metrics["mean_image_mse_per_pixel"]
    assert metrics["settings"]["epochs"] == 2
    assert metrics["n_train"] + metrics["n_valid"] == 400
    for key in ("wall_seconds", "torch_version", "device", "precision"):
        assert key in metrics, key
    assert "epoch 2/2" in result.stderr

    again = run_cli("--n_images", "400", "--epochs", "1", "--out", "run", "--quiet", cwd=tmp_path)
    assert again.returncode == 2
    assert "already contains a run" in again.stderr


def test_train_reads_competition_npz(tmp_path):
    np = pytest.importorskip("numpy")
    from fusion_tutorial.data import make_fusions
    data = make_fusions(300, seed=3)
    np.savez(tmp_path / "train.npz", images=data.images.numpy(), labels=data.labels.numpy())
    (tmp_path / "label2type.txt").write_text(repr({i: name for i, name in enumerate(data.classes)}))
    result = run_cli("--npz", "train.npz", "--epochs", "1", "--batch_size", "32", "--out", "npz_run", "--quiet",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "npz_run" / "metrics.json").read_text())
    assert metrics["settings"]["data"] == "train.npz"


def test_train_rejects_bad_options(tmp_path):
    result = run_cli("--epochs", "0", "--out", "bad", cwd=tmp_path)
    assert result.returncode == 2
    assert "epochs must be a positive integer" in result.stderr
    missing = run_cli("--npz", "missing.npz", "--out", "bad2", cwd=tmp_path)
    assert missing.returncode == 2
    assert "missing.npz" in missing.stderr
    unknown = run_cli("--no-such-option", cwd=tmp_path)
    assert unknown.returncode != 0
    assert "unrecognized arguments" in unknown.stderr


def test_help_lists_options():
    result = subprocess.run(["fusion-train", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for option in ("--n_images", "--epochs", "--batch_size", "--out", "--seed", "--device", "--npz"):
        assert option in result.stdout, option


def test_readme_and_ci_share_test_command():
    assert TEST_COMMAND in (root / "README.md").read_text()
    assert TEST_COMMAND in (root / ".ci" / "run").read_text()


def test_readme_matches_index_notebook():
    result = subprocess.run([sys.executable, str(root / "tools" / "make_readme.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
