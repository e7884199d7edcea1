"""Training as a process: SIGKILL and resume, and torchrun with two CPU processes."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TINY = ["--n_images", "300", "--epochs", "2", "--batch_size", "32", "--quiet"]
TIMINGS = {"training_seconds", "wall_seconds"}


def environment():
    return {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


def saved_position(path: Path):
    "Return (epoch, step) stored in a checkpoint, or None while it does not exist yet."
    import torch
    if not path.exists(): return None
    state = torch.load(path, weights_only=True, map_location="cpu")
    return state["epoch"], state["step"]


def comparable(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    history = json.loads((run / "history.json").read_text())
    return {"metrics": {k: v for k, v in metrics.items() if k not in TIMINGS},
            "history": [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")} for r in history]}


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    reference = subprocess.run(["fusion-train", *TINY, "--out", "reference"], cwd=tmp_path, env=environment(),
                               capture_output=True, text=True, timeout=900)
    assert reference.returncode == 0, reference.stderr[-2000:]

    process = subprocess.Popen(["fusion-train", *TINY, "--out", "killed"], cwd=tmp_path, env=environment(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.monotonic() + 600
    while (saved_position(checkpoint) or (0, 0))[0] < 1:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint after 600 s"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    epoch, step = saved_position(checkpoint)  # the checkpoint on disk is readable after the kill
    assert epoch >= 1
    assert not (tmp_path / "killed" / "metrics.json").exists(), "the killed run must not have finished"

    resumed = subprocess.run(["fusion-train", "--resume", "--out", "killed", "--quiet"], cwd=tmp_path,
                             env=environment(), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {checkpoint.relative_to(tmp_path)} at epoch {epoch + 1}" in resumed.stderr
    assert comparable(tmp_path / "killed") == comparable(tmp_path / "reference")


def test_resume_rejects_changed_settings(tmp_path):
    first = subprocess.run(["fusion-train", "--n_images", "200", "--epochs", "1", "--batch_size", "32", "--quiet",
                            "--out", "run"], cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    changed = subprocess.run(["fusion-train", "--resume", "--out", "run", "--lr", "0.1"], cwd=tmp_path,
                             env=environment(), capture_output=True, text=True, timeout=600)
    assert changed.returncode == 2
    assert "--lr 0.1 (stored: 0.002)" in changed.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo is tested on Linux")
def test_torchrun_two_cpu_processes(tmp_path):
    environment_one_thread = {**environment(), "OMP_NUM_THREADS": "1"}
    # torchrun runs the console script's Python file in each process.
    result = subprocess.run(["torchrun", "--standalone", "--nproc_per_node", "2", shutil.which("fusion-train"),
                             "--n_images", "256", "--epochs", "2", "--batch_size", "16", "--device", "cpu", "--quiet",
                             "--out", "ddp"], cwd=tmp_path, env=environment_one_thread, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    import torch
    from fusion_tutorial.training import load_model
    model, state = load_model(tmp_path / "ddp" / "checkpoint.pt")
    assert state["epoch"] == 2
    history = json.loads((tmp_path / "ddp" / "history.json").read_text())
    assert [record["epoch"] for record in history] == [1, 2]
    assert result.stderr.count("epoch 2/2") == 1, "only rank 0 logs"
