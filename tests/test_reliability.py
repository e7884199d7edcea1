"""Crashes, write errors, untrusted files and determinism, each tested on real `fusion-train` processes.

Tolerance for "the same metrics": none. On a CPU with the same number of threads, PyTorch's kernels do the same
arithmetic in the same order on every run. A checkpoint stores every random-number state, the step and the loss sums,
so a resumed run repeats the uninterrupted run's computation exactly. The tests therefore compare metrics and weights
for equality and leave out only the wall-clock fields.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from fusion_tutorial.data import load_competition, read_label2type
from fusion_tutorial.training import load_checkpoint, load_model

RUN = ["--n_images", "240", "--epochs", "8", "--batch_size", "32", "--quiet"]  # 192 training images, so 6 steps per epoch
TIMINGS = {"training_seconds", "wall_seconds"}
PER_EPOCH_TIMINGS = {"seconds", "images_per_second"}


def environment() -> dict:
    return {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


def train(folder: Path, *arguments: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["fusion-train", *arguments, "--out", str(folder)], env=environment(), capture_output=True,
                          text=True, timeout=900, **kwargs)


def comparable(run: Path) -> dict:
    "metrics.json and history.json without the wall-clock fields."
    metrics = json.loads((run / "metrics.json").read_text())
    history = json.loads((run / "history.json").read_text())
    return {"metrics": {k: v for k, v in metrics.items() if k not in TIMINGS},
            "history": [{k: v for k, v in record.items() if k not in PER_EPOCH_TIMINGS} for record in history]}


def tensors(run: Path) -> dict:
    "Every tensor of a checkpoint (weights, optimizer moments, RNG states), by a flat key."
    state = load_checkpoint(run / "checkpoint.pt")
    flat = {}
    def walk(prefix, value):
        if isinstance(value, torch.Tensor): flat[prefix] = value
        elif isinstance(value, dict):
            for key, item in value.items(): walk(f"{prefix}.{key}", item)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value): walk(f"{prefix}.{index}", item)
    walk("", {k: v for k, v in state.items() if k != "history"})
    return flat


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def saved_epoch(path: Path) -> int:
    "The last finished epoch stored in a checkpoint; 0 while there is none. Fails if the file is unreadable."
    if not path.exists(): return 0
    return load_checkpoint(path)["epoch"]


def start_until_checkpoint(arguments: list[str], folder: Path, epoch: int, **popen) -> subprocess.Popen:
    "Start `fusion-train` and return the process once the run folder's checkpoint has reached `epoch`."
    process = subprocess.Popen(["fusion-train", *arguments, "--out", str(folder)], env=environment(),
                               stdout=subprocess.DEVNULL, **({"stderr": subprocess.DEVNULL} | popen))
    deadline = time.monotonic() + 600
    while saved_epoch(folder / "checkpoint.pt") < epoch:
        assert process.poll() is None, f"the run ended before its checkpoint reached epoch {epoch}"
        assert time.monotonic() < deadline, f"no checkpoint for epoch {epoch} after 600 s"
        time.sleep(0.05)
    return process


def resume_and_compare(folder: Path, reference: Path):
    "Finish an interrupted run with --resume and check that it equals the uninterrupted reference run."
    resumed = train(folder, "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert comparable(folder) == comparable(reference)
    assert same_tensors(tensors(folder), tensors(reference))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("reference") / "run"
    result = train(folder, *RUN)
    assert result.returncode == 0, result.stderr[-2000:]
    return folder


def test_same_seed_identical_runs(reference, tmp_path):
    again = tmp_path / "again"
    assert train(again, *RUN).returncode == 0
    assert comparable(again) == comparable(reference)
    assert same_tensors(tensors(again), tensors(reference))
    umask = os.umask(0); os.umask(umask)
    assert (again / "checkpoint.pt").stat().st_mode & 0o777 == 0o666 & ~umask, "readable like the run's other files"


def test_other_seed_different_run(reference, tmp_path):
    other = tmp_path / "other"
    assert train(other, *RUN, "--seed", "1").returncode == 0
    assert comparable(other)["metrics"]["mse_per_pixel"] != comparable(reference)["metrics"]["mse_per_pixel"]
    assert not same_tensors(tensors(other), tensors(reference))


def test_sigkill_five_points_then_resume(reference, tmp_path):
    "Kill the run five times, right after a checkpoint or at a random moment inside the next epoch, resuming each time."
    # The fastest epoch of the reference run bounds the delays, so that a kill lands inside the next epoch.
    epoch_seconds = min(record["seconds"] for record in json.loads((reference / "history.json").read_text()))
    rng = random.Random(20261204)
    folder, checkpoint = tmp_path / "killed", tmp_path / "killed" / "checkpoint.pt"
    kills = []
    for inside in (False, True, True, False, True):
        delay = rng.uniform(0.2, 0.8) * epoch_seconds if inside else 0.0
        target = saved_epoch(checkpoint) + 1  # each process runs until it has written one more checkpoint
        arguments = ["--resume", "--quiet"] if checkpoint.exists() else RUN
        process = start_until_checkpoint(arguments, folder, target)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills.append((target, round(delay, 2), saved_epoch(checkpoint)))  # the checkpoint is readable after each kill
        assert not (folder / "metrics.json").exists(), f"the run finished before kill {len(kills)}"
    print("kills (epoch awaited, seconds after its checkpoint, epoch on disk):", kills)
    resume_and_compare(folder, reference)


def test_ctrl_c_mid_epoch_then_resume(reference, tmp_path):
    "SIGINT in the middle of epoch 2 saves the last finished step; the resumed run equals the uninterrupted one."
    epoch_seconds = min(record["seconds"] for record in json.loads((reference / "history.json").read_text()))
    folder, checkpoint = tmp_path / "interrupted", tmp_path / "interrupted" / "checkpoint.pt"
    process = start_until_checkpoint(RUN, folder, 1, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5 * epoch_seconds)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-2000:]
    assert "checkpoint saved" in stderr
    state = load_checkpoint(checkpoint)
    print("interrupted at epoch", state["epoch"] + 1, "after step", state["step"])
    resume_and_compare(folder, reference)


def test_overwrite_with_bad_option_keeps_run(reference, tmp_path):
    "--overwrite replaces a run only after every other option has been checked."
    folder = tmp_path / "run"
    shutil.copytree(reference, folder)
    before = hashlib.sha256((folder / "checkpoint.pt").read_bytes()).hexdigest()
    for bad in (["--device", "tpu"], ["--valid_fraction", "0"], ["--batch_size", "5000"]):
        result = train(folder, "--overwrite", "--n_images", "240", "--quiet", *bad)
        assert result.returncode == 2, result.stderr[-2000:]
        assert hashlib.sha256((folder / "checkpoint.pt").read_bytes()).hexdigest() == before, bad
        assert (folder / "metrics.json").exists(), bad

def limit_file_size(limit: int):
    "Return a function for Popen's preexec_fn that makes writes beyond `limit` bytes per file fail (EFBIG)."
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_write_error_keeps_checkpoint(tmp_path):
    "Stop a 3-epoch run after epoch 1, then resume it with writes limited to 1 MiB per file, far below a checkpoint."
    folder, checkpoint = tmp_path / "limited", tmp_path / "limited" / "checkpoint.pt"
    process = start_until_checkpoint(["--n_images", "240", "--epochs", "3", "--batch_size", "32", "--quiet"], folder, 1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    epoch = saved_epoch(checkpoint)
    before = hashlib.sha256(checkpoint.read_bytes()).hexdigest()

    failed = train(folder, "--resume", "--quiet", preexec_fn=limit_file_size(1 << 20))
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert "Traceback" not in failed.stderr
    assert f"cannot write checkpoint {checkpoint}" in failed.stderr
    assert "the previous checkpoint is unchanged" in failed.stderr
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == before
    assert saved_epoch(checkpoint) == epoch
    assert [path.name for path in folder.iterdir() if path.name.endswith(".tmp")] == [], "temporary file left behind"

    finished = train(folder, "--resume", "--quiet")
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert json.loads((folder / "metrics.json").read_text())["mse_per_pixel"] > 0


class TouchMarker:
    "A pickle payload that creates a file when unpickled: harmless, and proof that code ran."
    def __init__(self, marker: Path): self.marker = marker
    def __reduce__(self): return (Path.touch, (self.marker,))


def test_crafted_checkpoint_rejected(tmp_path):
    marker, path = tmp_path / "payload-ran", tmp_path / "checkpoint.pt"
    torch.save({"model": TouchMarker(marker), "config": {}}, path)
    torch.load(path, weights_only=False)  # the control: a plain unpickler runs the payload
    assert marker.exists()
    marker.unlink()

    with pytest.raises(ValueError, match="cannot load checkpoint .* contains objects other than tensors"):
        load_model(path)
    assert not marker.exists()

    run = tmp_path / "run"
    run.mkdir()
    path.rename(run / "checkpoint.pt")
    result = subprocess.run(["fusion-export", str(run), str(tmp_path / "submission")], env=environment(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "cannot load checkpoint" in result.stderr
    assert not marker.exists()


def test_label2type_code_rejected(tmp_path):
    marker = tmp_path / "payload-ran"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    exec(code)  # the control: evaluating the file's text would create the marker
    assert marker.exists()
    marker.unlink()
    path = tmp_path / "label2type.txt"
    path.write_text(code)
    with pytest.raises(ValueError, match="is not a Python dict literal"):
        read_label2type(path)
    import numpy as np
    np.savez(tmp_path / "train.npz", images=np.zeros((2, 3, 128, 128), np.uint8), labels=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="is not a Python dict literal"):
        load_competition(tmp_path / "train.npz")  # label2type.txt next to the npz is read the same way
    assert not marker.exists()

