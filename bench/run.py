"""Benchmark suite: every speed and memory figure of the project, each against a target or a baseline
measured in the same run, as the median of repeats after a warm-up. Prints a markdown table.

    python bench/run.py            # the full suite, including the main job (an estimated 15 minutes on 2 cores)
    python bench/run.py --quick    # every row at a smaller size; the numbers are only indicative
    python bench/run.py --page nbs/performance.ipynb --plot nbs/images/throughput.png   # refresh the docs page
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Time a cold torch.compile: without this, kernels cached by an earlier run hide most of the compilation.
os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")

import numpy as np
import torch
import torch.nn.functional as F

from fusion_tutorial.core import autocast, get_precision
from fusion_tutorial.data import emoji_fusions, make_fusions, to_model_input
from fusion_tutorial.loss import log_combined_loss
from fusion_tutorial.model import FusionAutoencoder
from fusion_tutorial.probing import extract_latents, linear_probe_accuracy


def median_time(function, repeats: int = 3, warmup: int = 1) -> float:
    "Run `function` `warmup` times, then `repeats` times, and return the median wall time in seconds."
    for _ in range(warmup): function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"): cpu = line.split(":", 1)[1].strip(); break
    except OSError: pass
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU only"
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}, {device}"


# ---------------------------------------------------------------- training throughput

def train_steps_package(model, images, labels, batch_size, steps, device, precision) -> float:
    "Time `steps` optimizer steps of the package's loop: uint8 in memory, bf16 autocast, channels_last."
    model.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    def run():
        for step in range(steps):
            index = torch.randint(0, len(images), (batch_size,))
            x = to_model_input(images[index], device, channels_last=True)
            with autocast(precision):
                reconstruction, logits, _ = model(x)
            loss, _ = log_combined_loss(reconstruction, x, logits, labels[index].to(device))
            optimizer.zero_grad(set_to_none=True); loss.backward(); optimizer.step()
    return steps * batch_size / median_time(run)


def train_steps_png_baseline(model, folder, labels, batch_size, steps, device) -> float:
    "Time a plain fp32 eager loop that decodes PNG files through a standard DataLoader."
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    class PngFolder(Dataset):
        def __init__(self, paths): self.paths = paths
        def __len__(self): return len(self.paths)
        def __getitem__(self, i):
            array = np.asarray(Image.open(self.paths[i]).convert("RGB"), dtype=np.float32) / 255
            return torch.from_numpy(array).permute(2, 0, 1), labels[i]

    paths = sorted(folder.glob("*.png"))
    loader = DataLoader(PngFolder(paths), batch_size=batch_size, shuffle=True, num_workers=0, drop_last=True)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    def run():
        for step, (x, y) in enumerate(loader):
            if step == steps: break
            x, y = x.to(device), y.to(device)
            reconstruction, logits, _ = model(x)
            loss = torch.log(F.mse_loss(reconstruction, x) + 1e-6) + torch.log(F.cross_entropy(logits, y) + 1e-6)
            optimizer.zero_grad(set_to_none=True); loss.backward(); optimizer.step()
    return steps * batch_size / median_time(run)


def training_rows(quick: bool, device: torch.device) -> tuple[list, dict]:
    from PIL import Image
    n, batch_size, steps = (256, 32, 4) if quick else (1024, 64, 12)
    data = make_fusions(n, seed=0)
    precision = get_precision(device)
    torch.manual_seed(0)
    package = train_steps_package(FusionAutoencoder(), data.images, data.labels, batch_size, steps, device, precision)
    with tempfile.TemporaryDirectory() as tmp:
        for i, image in enumerate(data.images.permute(0, 2, 3, 1).numpy()):
            Image.fromarray(image).save(Path(tmp) / f"{i:05d}.png")
        torch.manual_seed(0)
        baseline = train_steps_png_baseline(FusionAutoencoder(), Path(tmp), data.labels, batch_size, steps, device)
    ratio = package / baseline
    rows = [("training images/s: package loop (uint8 in memory, "
             f"{precision.name} autocast, channels_last)", f"{package:.0f}", "", ""),
            ("training images/s: plain fp32 eager loop over PNG files (DataLoader)", f"{baseline:.0f}", "", ""),
            ("training speed-up over the PNG baseline", f"{ratio:.2f}x", ">= 3x", "yes" if ratio >= 3 else "no")]
    return rows, {"package": package, "baseline": baseline, "batch_size": batch_size}


def configuration_rows(quick: bool, device: torch.device) -> tuple[list, dict]:
    "Measure training throughput by configuration: fp32, mixed precision, channels_last, torch.compile (full mode only)."
    n, batch_size, steps = (128, 32, 2) if quick else (512, 64, 8)
    data = make_fusions(n, seed=0)
    results = {}
    mixed = get_precision(device).name  # bf16 where supported, fp16 on older GPUs, fp32 on CPUs without native bf16
    for name, force_fp32, channels_last, compiled in (("fp32", True, False, False), (mixed, False, False, False),
                                                      (f"{mixed} + channels_last", False, True, False),
                                                      (f"{mixed} + channels_last + compile", False, True, True)):
        if compiled and quick: continue
        precision = get_precision(device, force_fp32)
        torch.manual_seed(0)
        model = FusionAutoencoder().to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        network = torch.compile(model) if compiled else model
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        def run():
            for step in range(steps):
                index = torch.randint(0, n, (batch_size,))
                x = to_model_input(data.images[index], device, channels_last)
                with autocast(precision):
                    reconstruction, logits, _ = network(x)
                loss, _ = log_combined_loss(reconstruction, x, logits, data.labels[index].to(device))
                optimizer.zero_grad(set_to_none=True); loss.backward(); optimizer.step()
        started = time.perf_counter()
        run()  # the first call compiles when `compiled`
        first = time.perf_counter() - started
        seconds = median_time(run, warmup=1)
        results[name] = steps * batch_size / seconds
        if compiled: compile_seconds = first - seconds
    rows = [(f"training images/s, {name}", f"{value:.0f}", "", "") for name, value in results.items()]
    if not quick:
        rows.append(("torch.compile: extra time of the first call, mostly compilation (s)", f"{compile_seconds:.0f}", "", ""))
    return rows, results


# ---------------------------------------------------------------- inference, data, probe

def inference_rows(quick: bool, device: torch.device) -> list:
    n = 3300
    data = make_fusions(660 if quick else n, seed=1)
    images = data.images.repeat(5, 1, 1, 1)[:n] if quick else data.images
    model = FusionAutoencoder().to(device, memory_format=torch.channels_last).eval()
    precision = get_precision(device)
    def run():
        with torch.inference_mode():
            for start in range(0, n, 256):
                x = to_model_input(images[start:start + 256], device)
                with autocast(precision): model.decode(model.encode(x))
    seconds = median_time(run)
    return [(f"encode + decode {n} images (s; competition limit 50 s)", f"{seconds:.2f}", "<= 5 s",
             "yes" if seconds <= 5 else "no")]


def data_rows(quick: bool) -> list:
    n = 2000 if quick else 18900
    generate = median_time(lambda: make_fusions(n, seed=2), repeats=1 if quick else 3)
    with tempfile.TemporaryDirectory() as tmp:
        emoji_fusions(n, seed=2, folder=tmp)
        reload = median_time(lambda: emoji_fusions(n, seed=2, folder=tmp), repeats=3)
    return [(f"generate {n} emoji fusions (images/s)", f"{n / generate:.0f}", ">= 2000", "yes" if n / generate >= 2000 else "no"),
            (f"reload {n} emoji fusions from the cache (s)", f"{reload:.2f}", "<= 2 s", "yes" if reload <= 2 else "no")]


def probe_rows(quick: bool, device: torch.device) -> list:
    n_train, n_test = (3300, 700)
    data = make_fusions(n_train + n_test, seed=3)
    torch.manual_seed(0)
    latents = extract_latents(FusionAutoencoder(), data, device=device)
    labels = data.labels.numpy()
    started = time.perf_counter()
    linear_probe_accuracy(latents[:n_train], labels[:n_train], latents[n_train:], labels[n_train:])
    seconds = time.perf_counter() - started
    return [(f"linear probe fit on {n_train} x 8192 latents of an untrained encoder (s)", f"{seconds:.1f}", "<= 5 s",
             "yes" if seconds <= 5 else "no")]


# ---------------------------------------------------------------- the main job

def main_job_rows(quick: bool) -> list:
    arguments = ["--n_images", "300", "--epochs", "1"] if quick else []
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        subprocess.run([shutil.which("fusion-train"), *arguments, "--out", str(Path(tmp) / "run"),
                        "--quiet"], check=True, capture_output=True, env={**os.environ, "FUSION_TUTORIAL_CACHE": tmp})
        wall = time.perf_counter() - started
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    label = "main job" + (" (quick: 300 images, 1 epoch)" if quick else ", default settings")
    return [(f"peak resident memory, {label} (GiB)", f"{peak_gib:.2f}", "<= 3 GiB", "yes" if peak_gib <= 3 else "no"),
            (f"wall time, {label} (s)", f"{wall:.0f}", "<= 600 s", "yes" if wall <= 600 else "no")]


# ---------------------------------------------------------------- hardware utilisation

def utilisation_rows(training: dict, device: torch.device) -> list:
    from torch.utils.flop_counter import FlopCounterMode
    precision = get_precision(device)
    model = FusionAutoencoder().to(device, memory_format=torch.channels_last)
    batch = 8
    x = torch.rand(batch, 3, 128, 128, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    with FlopCounterMode(display=False) as counter:
        with autocast(precision):
            reconstruction, logits, _ = model(x)
        log_combined_loss(reconstruction, x, logits, y)[0].backward()
    flop_per_image = counter.get_total_flops() / batch
    dtype = precision.dtype or torch.float32
    peak = matmul_flops(device, dtype)
    achieved = flop_per_image * training["package"]
    fraction = achieved / peak
    name = precision.name
    rows = [("training FLOP per image (forward + backward, torch.utils.flop_counter)", f"{flop_per_image / 1e9:.2f} G", "", ""),
            (f"2048x2048 {name} matmul throughput (GFLOP/s)", f"{peak / 1e9:.0f}", "", ""),
            (f"training throughput as a share of the {name} matmul", f"{fraction:.0%}", ">= 60%", "yes" if fraction >= 0.6 else "no")]
    if dtype != torch.float32:
        fp32 = matmul_flops(device, torch.float32)
        rows += [("2048x2048 fp32 matmul throughput (GFLOP/s)", f"{fp32 / 1e9:.0f}", "", ""),
                 (f"{name} over fp32 matmul throughput: the speed-up that precision alone can give", f"{peak / fp32:.2f}x", "", "")]
    return rows


def matmul_flops(device: torch.device, dtype: torch.dtype) -> float:
    "Measure the FLOP/s of a 2048x2048 matrix multiply in `dtype`, the practical peak for dense compute."
    a = torch.randn(2048, 2048, device=device, dtype=dtype)
    b = torch.randn(2048, 2048, device=device, dtype=dtype)
    def matmul():
        for _ in range(10): a @ b
        if device.type == "cuda": torch.cuda.synchronize()
    return 10 * 2 * 2048**3 / median_time(matmul, repeats=5)


def plot_configurations(results: dict, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.barh(list(results), list(results.values()), color="tab:blue")
    ax.set_xlabel("training images per second"); ax.set_title("Training throughput by configuration")
    for i, value in enumerate(results.values()): ax.text(value, i, f" {value:.0f}", va="center")
    ax.set_xlim(0, max(results.values()) * 1.15)  # room for the labels
    fig.tight_layout(); fig.savefig(path, dpi=100)


def main():
    parser = argparse.ArgumentParser(description="fusion_tutorial benchmark suite")
    parser.add_argument("--quick", action="store_true", help="run every row at a smaller size, in under 2 minutes")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    parser.add_argument("--plot", type=Path, help="write the throughput-by-configuration bar chart to this PNG file")
    parser.add_argument("--page", type=Path, help="write the table into this docs notebook, such as nbs/performance.ipynb")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()

    rows, training = training_rows(args.quick, device)
    rows += utilisation_rows(training, device)
    configuration, configurations = configuration_rows(args.quick, device)
    rows += configuration
    compiled = next((value for name, value in configurations.items() if name.endswith("compile")), None)
    if compiled:
        # The configuration rows use a smaller data set than the PNG comparison, so the ratio is indicative.
        ratio = compiled / training["baseline"]
        rows.append(("training speed-up over the PNG baseline with torch.compile", f"{ratio:.2f}x", ">= 3x",
                     "yes" if ratio >= 3 else "no"))
    rows += inference_rows(args.quick, device)
    rows += data_rows(args.quick)
    rows += probe_rows(args.quick, device)
    rows += main_job_rows(args.quick)

    if device.type == "cuda":  # NOTE: the CUDA path of the suite has not run yet, because the CI machine has no GPU.
        rows.append(("peak GPU memory allocated by the benchmarks (GiB)", f"{torch.cuda.max_memory_allocated() / 2**30:.2f}", "", ""))

    report = "\n".join([
        f"Machine: {machine_line()}", "",
        f"Command: `python bench/run.py{' --quick' if args.quick else ''}` "
        f"({time.perf_counter() - started:.0f} s; medians of repeats after a warm-up, {datetime.date.today()})", "",
        "| measurement | value | target | met |", "|---|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in rows)])
    print(report)
    if args.json: args.json.write_text(json.dumps({"machine": machine_line(), "rows": rows, "configurations": configurations}, indent=2))
    if args.plot: plot_configurations(configurations, args.plot)
    if args.page: write_page(args.page, report)


def write_page(path: Path, report: str):
    "Replace the text between the table markers of a docs notebook with `report`."
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        if PAGE_START in source and PAGE_END in source:
            before, rest = source.split(PAGE_START)
            cell["source"] = f"{before}{PAGE_START}\n\n{report}\n\n{PAGE_END}{rest.split(PAGE_END)[1]}".splitlines(keepends=True)
            break
    else: raise SystemExit(f"{path} has no cell with the markers {PAGE_START} and {PAGE_END}")
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")


PAGE_START, PAGE_END = "<!-- benchmark table: start -->", "<!-- benchmark table: end -->"


if __name__ == "__main__":
    main()
