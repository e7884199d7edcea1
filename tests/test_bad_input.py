"""Bad input: every public entry point rejects it with the package's own message, naming the value or file.

Each case below is one test. The last test checks that the docs page `nbs/reliability.ipynb` lists every case with
the message it gets now; `python tools/make_reliability_page.py` rewrites that table.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

import fusion_tutorial
from fusion_tutorial.data import (emoji_fusions, load_competition, load_image_folder, make_fusions, read_image_file,
                                  read_label2type, split_dataset)
from fusion_tutorial.evaluation import competition_score, export_submission, load_run
from fusion_tutorial.model import FusionAutoencoder
from fusion_tutorial.probing import fit_linear_probe, linear_probe_accuracy
from fusion_tutorial.sampling import interpolate_latents, latent_stats
from fusion_tutorial.training import TrainConfig, fit, load_model, model_state, save_checkpoint

root = Path(__file__).resolve().parent.parent
PAGE = root / "nbs" / "reliability.ipynb"
PACKAGE = Path(fusion_tutorial.__file__).resolve().parent


@dataclass
class Case:
    name: str  # test id
    entry: str  # the entry point, as the docs table names it
    bad_input: str  # the bad input, in words
    expected: tuple[str, ...]  # fragments the message must contain
    call: Callable[[Path], object] | None = None  # Python API: called with a scratch folder, must raise
    argv: Callable[[Path], list[str]] | list[str] | None = None  # console script: its arguments
    error: type = Exception  # exception type the Python API raises
    needs_run: bool = False  # the case uses a small trained run folder


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return path


def save_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def images(n: int, side: int = 128) -> np.ndarray:
    return np.zeros((n, 3, side, side), np.uint8)


def model():
    torch.manual_seed(0)
    return FusionAutoencoder()


def other_architecture_checkpoint(path: Path) -> Path:
    "A checkpoint whose weights come from a smaller model than the settings it records."
    state = model_state(FusionAutoencoder(widths=(16, 32, 64, 128)))
    state["config"] = dict(model().config)
    return save_checkpoint(path, state)


def truncated_checkpoint(path: Path) -> Path:
    save_checkpoint(path, model_state(model()))
    data = path.read_bytes()
    return write(path, data[: len(data) // 2])



def fit_with_large_batch(tmp: Path):
    fit(model(), make_fusions(10, seed=0), config=TrainConfig(epochs=1, batch_size=64), progress=False)


def label_folder(tmp: Path) -> Path:
    from PIL import Image
    folder = tmp / "images"
    folder.mkdir()
    Image.new("RGB", (128, 128)).save(folder / "a.png")
    return folder


def run_without_checkpoint(tmp: Path) -> Path:
    folder = tmp / "no_checkpoint"
    write(folder / "metrics.json", json.dumps({"settings": {"n_images": 40, "seed": 0}}))
    return folder


CASES = [
    # the model
    Case("encode_channels_last", "FusionAutoencoder.encode", "images of shape (2, 128, 128, 3), channels last",
         ("expected images of shape (B, 3, 128, 128)", "(2, 128, 128, 3)", "permute"), error=ValueError,
         call=lambda tmp: model().encode(torch.rand(2, 128, 128, 3))),
    Case("encode_uint8", "FusionAutoencoder.encode", "uint8 images", ("expected float images", "torch.uint8"),
         error=TypeError, call=lambda tmp: model().encode(torch.zeros(2, 3, 128, 128, dtype=torch.uint8))),
    Case("forward_numpy", "FusionAutoencoder.forward", "a NumPy array instead of a tensor",
         ("expected a torch.Tensor", "ndarray"), error=TypeError,
         call=lambda tmp: model()(np.zeros((2, 3, 128, 128), np.float32))),
    Case("encode_wrong_size", "FusionAutoencoder.encode", "64×64 images", ("(B, 3, 128, 128)", "(2, 3, 64, 64)"),
         error=ValueError, call=lambda tmp: model().encode(torch.rand(2, 3, 64, 64))),
    Case("decode_wrong_shape", "FusionAutoencoder.decode", "latents of shape (2, 4096)",
         ("expected latents of shape (B, 128, 8, 8) or (B, 8192)", "(2, 4096)"), error=ValueError,
         call=lambda tmp: model().decode(torch.rand(2, 4096))),
    Case("decode_integer", "FusionAutoencoder.decode", "int64 latents", ("expected float latents", "torch.int64"),
         error=TypeError, call=lambda tmp: model().decode(torch.zeros(2, 8192, dtype=torch.long))),
    Case("bottleneck_too_large", "FusionAutoencoder()", "latent_channels=256 (16,384 values)",
         ("256 × 8 × 8 = 16384", "above the limit of 8192"), error=ValueError,
         call=lambda tmp: FusionAutoencoder(latent_channels=256)),
    Case("zero_width", "FusionAutoencoder()", "widths=(32, 0)", ("widths must be one or more positive", "(32, 0)"),
         error=ValueError, call=lambda tmp: FusionAutoencoder(widths=(32, 0))),
    Case("unknown_activation", "FusionAutoencoder()", "activation='Swish'", ("unknown activation 'Swish'",),
         error=ValueError, call=lambda tmp: FusionAutoencoder(activation="Swish")),
    # training
    Case("batch_size_zero", "TrainConfig", "batch_size=0", ("batch_size must be a positive integer, got 0",),
         error=ValueError, call=lambda tmp: TrainConfig(batch_size=0)),
    Case("epochs_negative", "TrainConfig", "epochs=-3", ("epochs must be a positive integer, got -3",),
         error=ValueError, call=lambda tmp: TrainConfig(epochs=-3)),
    Case("lr_zero", "TrainConfig", "lr=0", ("lr must be a positive finite number, got 0",), error=ValueError,
         call=lambda tmp: TrainConfig(lr=0)),
    Case("batch_larger_than_data", "fit", "batch_size=64 for 10 images",
         ("batch_size 64 is larger than the 10 training images",), error=ValueError, call=fit_with_large_batch),
    # checkpoints
    Case("checkpoint_truncated", "load_model", "a checkpoint cut to half its size",
         ("cannot load checkpoint", "truncated, corrupt"), error=ValueError,
         call=lambda tmp: load_model(truncated_checkpoint(tmp / "c.pt"))),
    Case("checkpoint_other_architecture", "load_model", "weights of a narrower model than the settings it records",
         ("does not match the architecture", "tensors of another shape", "encoder."), error=ValueError,
         call=lambda tmp: load_model(
             other_architecture_checkpoint(tmp / "c.pt"))),
    Case("checkpoint_plain_state_dict", "load_model", "a bare state_dict without the model settings",
         ("is not a fusion_tutorial checkpoint", "expected keys 'model' and 'config'"), error=ValueError,
         call=lambda tmp: (torch.save(model().state_dict(), tmp / "c.pt"),
                           load_model(tmp / "c.pt"))),
    Case("checkpoint_missing", "load_model", "a path with no file", ("checkpoint not found", "missing.pt"),
         error=FileNotFoundError,
         call=lambda tmp: load_model(tmp / "missing.pt")),
    # data
    Case("npz_missing", "load_competition", "a path with no file", ("data file not found", "train.npz"),
         error=FileNotFoundError, call=lambda tmp: load_competition(tmp / "train.npz")),
    Case("npz_without_labels", "load_competition", "an archive with images but no labels",
         ("has no 'labels' array", "['images']"), error=KeyError,
         call=lambda tmp: load_competition(
             save_npz(tmp / "train.npz", images=images(4)))),
    Case("npz_small_images", "load_competition", "64×64 images",
         ("expected 128×128 images, got 64×64", "resize=True"), error=ValueError,
         call=lambda tmp: load_competition(
             save_npz(tmp / "train.npz", images=images(4, 64), labels=np.zeros(4, np.int64)))),
    Case("npz_label_count", "load_competition", "4 images and 3 labels", ("4 images but 3 labels",), error=ValueError,
         call=lambda tmp: load_competition(
             save_npz(tmp / "train.npz", images=images(4), labels=np.zeros(3, np.int64)))),
    Case("npz_float_labels", "load_competition", "float labels", ("expected integer labels", "float64"), error=TypeError,
         call=lambda tmp: load_competition(
             save_npz(tmp / "train.npz", images=images(4), labels=np.zeros(4)))),
    Case("label2type_code", "read_label2type", "a file holding a function call instead of a dict literal",
         ("is not a Python dict literal",), error=ValueError,
         call=lambda tmp: read_label2type(
             write(tmp / "label2type.txt", "__import__('os').getcwd()"))),
    Case("label2type_gap", "read_label2type", "keys 0 and 2 without 1", ("must have the keys 0 to 1 without gaps",),
         error=ValueError, call=lambda tmp: read_label2type(
             write(tmp / "label2type.txt", "{0: 'bug', 2: 'fire'}"))),
    Case("label2type_latin1", "read_label2type", "a file saved as Latin-1", ("is not UTF-8 text", "save it as UTF-8"),
         error=ValueError, call=lambda tmp: read_label2type(write(tmp / "label2type.txt", "{0: 'caf\xe9'}".encode("latin-1")))),
    Case("npz_sparse_labels", "load_competition", "labels 0, 10^9, 2·10^9, 3·10^9 and no label2type.txt",
         ("labels go up to 3000000000 but only 4 distinct values occur", "np.unique"), error=ValueError,
         call=lambda tmp: load_competition(save_npz(tmp / "train.npz", images=images(8),
                                                    labels=np.arange(8) % 4 * 10**9))),
    Case("npz_object_array", "load_competition", "labels saved as an object array",
         ("cannot read its arrays", "np.savez"), error=ValueError,
         call=lambda tmp: load_competition(save_npz(tmp / "train.npz", images=images(2),
                                                    labels=np.array([0, "a"], dtype=object)))),
    Case("image_truncated", "read_image_file", "a PNG file cut short", ("cannot decode the image", "broken.png"),
         error=ValueError, call=lambda tmp: read_image_file(
             write(tmp / "broken.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"))),
    Case("folder_without_csv", "load_image_folder", "a folder of images with no labels.csv",
         ("label file not found", "labels.csv", "filename,label"), error=FileNotFoundError,
         call=lambda tmp: load_image_folder(label_folder(tmp))),
    Case("fusions_zero", "emoji_fusions", "n=0", ("n must be a positive integer, got 0",), error=ValueError,
         call=lambda tmp: emoji_fusions(0, folder=tmp)),
    Case("valid_fraction_above_one", "split_dataset", "valid_fraction=1.5", ("valid_fraction must be in (0, 1), got 1.5",),
         error=ValueError, call=lambda tmp: split_dataset(
             make_fusions(10, seed=0), 1.5)),
    # probing, sampling, evaluation
    Case("probe_unflattened", "linear_probe_accuracy", "latents of shape (8, 128, 8, 8)",
         ("expected features of shape (N, D)", "(8, 128, 8, 8)", "flatten"), error=ValueError,
         call=lambda tmp: linear_probe_accuracy(
             np.zeros((8, 128, 8, 8)), np.arange(8) % 2, np.zeros((8, 128, 8, 8)), np.arange(8) % 2)),
    Case("probe_one_class", "fit_linear_probe", "labels of a single class", ("at least 2 classes", "[0]"), error=ValueError,
         call=lambda tmp: fit_linear_probe(np.zeros((8, 4)), np.zeros(8, int))),
    Case("stats_one_latent", "latent_stats", "one latent", ("at least 2 flattened latents", "(1, 8192)"), error=ValueError,
         call=lambda tmp: latent_stats(np.zeros((1, 8192)))),
    Case("interpolate_one_step", "interpolate_latents", "steps=1", ("steps must be at least 2", "got 1"), error=ValueError,
         call=lambda tmp: interpolate_latents(torch.zeros(4), torch.ones(4), 1)),
    Case("score_zero_accuracy", "competition_score", "probe_accuracy=0", ("probe_accuracy must be in (0, 1], got 0",),
         error=ValueError, call=lambda tmp: competition_score(0.01, 0)),
    Case("run_without_metrics", "load_run", "a folder without metrics.json", ("metrics.json not found",),
         error=FileNotFoundError, call=lambda tmp: load_run(
             (tmp / "empty").mkdir() or tmp / "empty")),
    Case("run_metrics_not_object", "load_run", "a metrics.json holding a list", ("contains a JSON list, expected an object",),
         error=ValueError, call=lambda tmp: load_run(write(tmp / "run" / "metrics.json", "[1, 2]").parent)),
    Case("checkpoint_config_none", "load_model", "a checkpoint whose model settings are None",
         ("records model settings of type NoneType, expected a dict",), error=ValueError,
         call=lambda tmp: load_model(save_checkpoint(tmp / "c.pt", {"model": {}, "config": None}))),
    Case("export_over_submission", "export_submission", "a folder that already holds model.py",
         ("already contains a submission", "--overwrite"), error=FileExistsError,
         call=lambda tmp: export_submission(
             model(), write(tmp / "sub" / "model.py", "").parent)),
    # console scripts
    Case("cli_epochs_zero", "fusion-train", "--epochs 0", ("epochs must be a positive integer, got 0",),
         argv=["fusion-train", "--epochs", "0", "--out", "run"]),
    Case("cli_batch_size_zero", "fusion-train", "--batch_size 0", ("batch_size must be a positive integer, got 0",),
         argv=["fusion-train", "--batch_size", "0", "--out", "run"]),
    Case("cli_lr_negative", "fusion-train", "--lr -0.01", ("lr must be a positive finite number, got -0.01",),
         argv=["fusion-train", "--lr", "-0.01", "--out", "run"]),
    Case("cli_lr_infinite", "fusion-train", "--lr inf", ("lr must be a positive finite number, got inf",),
         argv=["fusion-train", "--lr", "inf", "--out", "run"]),
    Case("cli_seed_negative", "fusion-train", "--seed -1", ("seed must be a non-negative integer, got -1",),
         argv=["fusion-train", "--seed", "-1", "--out", "run"]),
    Case("cli_valid_fraction_zero", "fusion-train", "--valid_fraction 0", ("valid_fraction must be in (0, 1), got 0.0",),
         argv=["fusion-train", "--valid_fraction", "0", "--out", "run"]),
    Case("cli_single_class", "fusion-train", "--npz with one class only", ("the training split contains a single class",),
         argv=lambda tmp: ["fusion-train", "--npz", str(save_npz(tmp / "one.npz", images=images(50),
                                                                labels=np.zeros(50, np.int64))), "--batch_size", "8",
                          "--out", "run"]),
    Case("cli_batch_larger_than_data", "fusion-train", "--n_images 300 --batch_size 500",
         ("batch_size 500 is larger than the", "training images", "lower batch_size"),
         argv=["fusion-train", "--n_images", "300", "--batch_size", "500", "--out", "run", "--quiet"]),
    Case("cli_too_few_images", "fusion-train", "--n_images 1", ("--n_images must be at least 2, got 1",),
         argv=["fusion-train", "--n_images", "1", "--out", "run"]),
    Case("cli_unknown_preset", "fusion-train", "--preset huge", ("unknown preset 'huge'", "quick, paper"),
         argv=["fusion-train", "--preset", "huge", "--out", "run"]),
    Case("cli_unknown_device", "fusion-train", "--device tpu", ("invalid device 'tpu'",),
         argv=["fusion-train", "--device", "tpu", "--out", "run"]),
    Case("cli_unknown_loss", "fusion-train", "--loss l1", ("loss must be 'log' or 'weighted', got 'l1'",),
         argv=["fusion-train", "--loss", "l1", "--out", "run"]),
    Case("cli_unknown_option", "fusion-train", "--bogus 1", ("unrecognized arguments: --bogus 1",),
         argv=["fusion-train", "--bogus", "1"]),
    Case("cli_not_a_number", "fusion-train", "--epochs three", ("argument --epochs: invalid int value: 'three'",),
         argv=["fusion-train", "--epochs", "three"]),
    Case("cli_existing_run", "fusion-train", "--out a folder that holds another run",
         ("already contains a run (checkpoint.pt)", "resume it, or overwrite it"), needs_run=True,
         argv=lambda tmp: ["fusion-train", "--n_images", "40", "--out", str(tmp / "run")]),
    Case("cli_unwritable_out", "fusion-train", "--out below a regular file", ("cannot create run folder", "Not a directory"),
         argv=lambda tmp: ["fusion-train", "--n_images", "40", "--out", str(write(tmp / "file", "") / "run")]),
    Case("cli_resume_nothing", "fusion-train", "--resume with an empty folder", ("cannot resume", "not found"),
         argv=lambda tmp: ["fusion-train", "--resume", "--out", str(tmp / "nothing")]),
    Case("cli_npz_missing", "fusion-train", "--npz missing.npz", ("data file not found", "missing.npz"),
         argv=["fusion-train", "--npz", "missing.npz", "--out", "run"]),
    Case("cli_evaluate_missing_folder", "fusion-evaluate", "a folder that does not exist", ("run folder not found",),
         argv=lambda tmp: ["fusion-evaluate", str(tmp / "nowhere")]),
    Case("cli_evaluate_no_checkpoint", "fusion-evaluate", "a run folder without checkpoint.pt",
         ("checkpoint not found", "checkpoint.pt"), argv=lambda tmp: ["fusion-evaluate", str(run_without_checkpoint(tmp))]),
    Case("cli_sample_no_checkpoint", "fusion-sample", "a run folder without checkpoint.pt",
         ("checkpoint not found", "checkpoint.pt"), argv=lambda tmp: ["fusion-sample", str(run_without_checkpoint(tmp))]),
    Case("cli_export_no_checkpoint", "fusion-export", "a run folder without checkpoint.pt",
         ("checkpoint not found", "checkpoint.pt"),
         argv=lambda tmp: ["fusion-export", str(run_without_checkpoint(tmp)), str(tmp / "submission")]),
    Case("cli_evaluate_timing_zero", "fusion-evaluate", "--timing_images 0", ("--timing_images must be at least 1, got 0",),
         argv=lambda tmp: ["fusion-evaluate", str(tmp), "--timing_images", "0"]),
    Case("cli_sample_report_zero", "fusion-sample", "--n_report 0", ("--n_report must be at least 2", "got 0"),
         argv=lambda tmp: ["fusion-sample", str(tmp), "--n_report", "0"]),
    Case("cli_sample_steps", "fusion-sample", "--steps 2", ("expected n >= 1 and steps >= 3", "steps=2"), needs_run=True,
         argv=lambda tmp: ["fusion-sample", str(tmp / "run"), "--steps", "2"]),
    Case("cli_sample_pair", "fusion-sample", "--image_b 5000", ("pair (0, 5000) is out of range for", "held-out images"),
         needs_run=True, argv=lambda tmp: ["fusion-sample", str(tmp / "run"), "--image_b", "5000"]),
    Case("cli_export_truncated", "fusion-export", "a run whose checkpoint.pt is cut short", ("cannot load checkpoint",),
         needs_run=True, argv=lambda tmp: ["fusion-export", str(truncate_run_checkpoint(tmp)), str(tmp / "submission")]),
    Case("cli_evaluate_other_architecture", "fusion-evaluate", "a run whose checkpoint holds another architecture",
         ("does not match the architecture",), needs_run=True,
         argv=lambda tmp: ["fusion-evaluate", str(swap_run_checkpoint(tmp))]),
]


def truncate_run_checkpoint(tmp: Path) -> Path:
    path = tmp / "run" / "checkpoint.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path.parent


def swap_run_checkpoint(tmp: Path) -> Path:
    other_architecture_checkpoint(tmp / "run" / "checkpoint.pt")
    return tmp / "run"


def environment() -> dict:
    return {**os.environ, "MPLBACKEND": "Agg"}


def make_trained_run(folder: Path) -> Path:
    "Train for one epoch on 400 images and return the run folder."
    result = subprocess.run(["fusion-train", "--n_images", "400", "--epochs", "1", "--batch_size", "32", "--quiet",
                             "--out", str(folder)], env=environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return folder


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    "A small run folder, copied into each case that needs it."
    return make_trained_run(tmp_path_factory.mktemp("trained") / "run")


def normalise(message: str, tmp: Path) -> str:
    "Make a message independent of the scratch folder, for the docs table."
    return " ".join(message.replace(str(tmp.resolve()), "TMP").replace(str(tmp), "TMP").split())


def console_message(stderr: str) -> str:
    "The package's error line after the log prefix, or argparse's `error:` line."
    for line in stderr.splitlines():
        match = re.search(r"\bERROR (.*)$", line) or re.search(r": error: (.*)$", line)
        if match: return match.group(1)
    return ""


MESSAGES: dict[str, tuple[str, str]] = {}  # case name -> (kind of failure, normalised message), read by the page test


def run_case(case: Case, tmp: Path, trained: Path | None) -> tuple[str, str]:
    "Run one case and return (how it failed, its message), after checking that it failed as expected."
    if trained is not None: shutil.copytree(trained, tmp / "run")
    if case.call is not None:
        with pytest.raises(case.error) as caught:
            case.call(tmp)
        frame = traceback.extract_tb(caught.tb)[-1]
        assert Path(frame.filename).resolve().is_relative_to(PACKAGE), \
            f"raised from {frame.filename}:{frame.lineno}, not by the package with its own message"
        return caught.type.__name__, str(caught.value).strip("\"'") if caught.type is KeyError else str(caught.value)
    argv = case.argv(tmp) if callable(case.argv) else case.argv
    result = subprocess.run(argv, cwd=tmp, env=environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, f"exit status {result.returncode}; stderr: {result.stderr[-1500:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    message = console_message(result.stderr)
    assert message, f"no error line in: {result.stderr[-1500:]}"
    return "exit status 2", message


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_bad_input(case, tmp_path, request):
    trained = request.getfixturevalue("trained_run") if case.needs_run else None
    kind, message = run_case(case, tmp_path, trained)
    for fragment in case.expected: assert fragment in message, f"{fragment!r} not in {message!r}"
    MESSAGES[case.name] = (kind, normalise(message, tmp_path))


def test_case_count_and_names():
    assert len(CASES) >= 25
    assert len({case.name for case in CASES}) == len(CASES)


def page_rows() -> dict[str, tuple[str, str]]:
    "Read (failure, message) per case name from the docs page's table."
    rows = {}
    for cell in json.loads(PAGE.read_text())["cells"]:
        for line in "".join(cell["source"]).splitlines():
            cells = [part.strip() for part in re.split(r"(?<!\\)\|", line)[1:-1]]
            if len(cells) == 5 and cells[0].startswith("`") and cells[0] != "`name`":
                rows[cells[0].strip("`")] = (cells[3], cells[4].replace("\\|", "|"))
    return rows


def test_reliability_page_up_to_date():
    "Runs after the cases (pytest keeps file order); compares the messages they produced with the docs table."
    rows = page_rows()
    assert set(rows) == {case.name for case in CASES}, "rerun `python tools/make_reliability_page.py`"
    stale = {name: (rows[name], got) for name, got in MESSAGES.items() if rows[name] != got}
    assert not stale, f"the docs table is out of date, rerun `python tools/make_reliability_page.py`: {stale}"
