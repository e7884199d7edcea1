"""Process-level checks of fusion-evaluate, fusion-sample and fusion-export on a small trained run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = ("fusion-evaluate", "fusion-sample", "fusion-export")

# The course's loader, run in a fresh interpreter: only torch and the submission folder, the package blocked.
LOADER = r'''
import sys
sys.modules["fusion_tutorial"] = None  # importing the package now raises ImportError
import torch
folder, images_path = sys.argv[1], sys.argv[2]
sys.path.insert(0, folder)
from model import Model
model = Model()
model.load_state_dict(torch.load(folder + "/checkpoint.pt"))
model.eval()
images = torch.load(images_path)
squared_error = 0.0
with torch.no_grad():
    for start in range(0, len(images), 64):
        x = images[start:start + 64].float() / 255
        latent = model.encode(x)
        assert isinstance(latent, torch.Tensor) and latent[0].numel() <= 8192, type(latent)
        reconstruction = model.decode(latent)
        assert reconstruction.shape == x.shape, reconstruction.shape
        squared_error += ((reconstruction - x) ** 2).sum().item()
loaded = [name for name, module in sys.modules.items() if name.startswith("fusion_tutorial") and module is not None]
print(squared_error / images.numel(), len(loaded))
'''


def run_script(name, *args, cwd, timeout=900):
    environment = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([name, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environment)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scripts")
    result = run_script("fusion-train", "--n_images", "400", "--epochs", "2", "--batch_size", "32", "--out", "run",
                        "--quiet", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder / "run"


def test_export_reproduces_mse_in_fresh_process(run_folder, tmp_path):
    torch = pytest.importorskip("torch")
    from fusion_tutorial.core import choose_precision
    from fusion_tutorial.evaluation import load_run
    from fusion_tutorial.training import evaluate

    result = run_script("fusion-export", str(run_folder), "submission", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    submission = tmp_path / "submission"
    assert result.stdout.strip().splitlines()[-1] == str(submission.resolve())
    assert sorted(p.name for p in submission.iterdir()) == ["checkpoint.pt", "model.py"]
    assert "import fusion_tutorial" not in (submission / "model.py").read_text()

    run = load_run(run_folder)
    images_path = tmp_path / "held_out.pt"
    torch.save(run.valid_data.images, images_path)
    loader = subprocess.run([sys.executable, "-I", "-c", LOADER, str(submission), str(images_path)],
                            capture_output=True, text=True, timeout=600)
    assert loader.returncode == 0, loader.stderr
    fresh_mse, n_package_modules = loader.stdout.split()
    assert n_package_modules == "0"

    package_fp32 = evaluate(run.model, run.valid_data, precision=choose_precision("cpu", force_fp32=True))["mse"]
    assert float(fresh_mse) == pytest.approx(package_fp32, rel=1e-5)
    recorded = json.loads((run_folder / "metrics.json").read_text())["mse_per_pixel"]
    assert float(fresh_mse) == pytest.approx(recorded, rel=0.05)


def test_export_rejects_existing_submission(run_folder, tmp_path):
    first = run_script("fusion-export", str(run_folder), "out", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = run_script("fusion-export", str(run_folder), "out", cwd=tmp_path)
    assert again.returncode == 2
    assert "already contains a submission" in again.stderr
    forced = run_script("fusion-export", str(run_folder), "out", "--overwrite", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr


def test_evaluate_writes_metrics_and_figures(run_folder, tmp_path):
    result = run_script("fusion-evaluate", str(run_folder), "--out", "evaluation", "--timing_images", "100", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "evaluation"
    assert result.stdout.strip().splitlines()[-1] == str(out.resolve())
    for name in ("evaluation.json", "probe_table.md", "rules.md", "reconstructions.png", "per_class_accuracy.png"):
        assert (out / name).is_file(), name

    saved = json.loads((out / "evaluation.json").read_text())
    metrics = saved["metrics"]
    assert metrics["mse_sum_per_image"] == pytest.approx(metrics["mse_per_pixel"] * 49152)
    assert metrics["score_per_pixel"] == pytest.approx(metrics["mse_per_pixel"] / metrics["probe_accuracy"])
    assert "MSE per pixel" in saved["score"]
    rules = saved["rules"]
    assert rules["latent_values"] == 8192
    assert rules["latent_ok"]
    assert rules["parameters_ok"]
    assert rules["state_dict_ok"]
    assert rules["inference_images"] == 100
    assert rules["inference_seconds_per_3300"] == pytest.approx(rules["inference_seconds"] * 33)
    table = saved["probe_table"]
    assert set(table) >= {"trained encoder (8,192)", "untrained encoder (8,192)", "raw pixels 16×16 (768)",
                          "raw pixels 32×32 (3,072)"}
    assert table["trained encoder (8,192)"]["head"] == pytest.approx(metrics["probe_accuracy"], abs=1e-12)
    assert "| features |" in (out / "probe_table.md").read_text()

    again = run_script("fusion-evaluate", str(run_folder), "--out", "evaluation", "--no_baselines", cwd=tmp_path)
    assert again.returncode == 2
    assert "already contains evaluation.json" in again.stderr


def test_sample_writes_grid_and_strip(run_folder, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    result = run_script("fusion-sample", str(run_folder), "--out", "sampling", "--n", "8", "--steps", "5",
                        "--n_report", "8", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "sampling"
    for name in ("samples.png", "interpolation.png", "sampler_comparison.png"):
        with Image.open(out / name) as image:
            assert image.width > 100, (name, image.size)
            assert image.height > 50, (name, image.size)
    saved = json.loads((out / "sampling.json").read_text())
    assert saved["steps"] == 5
    assert saved["report"]["held-out reconstructions"]["latent distance (× held-out)"] == pytest.approx(1.0)
    assert "grader: N(mean, std)" in saved["report"]

    bad = run_script("fusion-sample", str(run_folder), "--out", "sampling2", "--image_b", "100000", cwd=tmp_path)
    assert bad.returncode == 2
    assert "out of range" in bad.stderr


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_rejects_missing_run(name, tmp_path):
    args = ["no_such_run", "out"] if name == "fusion-export" else ["no_such_run"]
    result = run_script(name, *args, cwd=tmp_path)
    assert result.returncode == 2
    assert "no_such_run" in result.stderr
    assert "not found" in result.stderr


@pytest.mark.parametrize("name, options", [
    ("fusion-evaluate", ("--out", "--timing_images", "--no_baselines", "--overwrite")),
    ("fusion-sample", ("--out", "--n", "--steps", "--image_a", "--image_b", "--seed")),
    ("fusion-export", ("--overwrite",)),
])
def test_script_help_lists_options(name, options):
    result = subprocess.run([name, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "run_dir" in result.stdout
    for option in options:
        assert option in result.stdout, option
