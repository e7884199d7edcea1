"""Measure how fast emoji fusions are generated and how fast a cached set reloads.

Run from the repository root, alone on the machine if possible (the numbers are wall-clock times):

    flock /tmp/fusion_cpu.lock python bench/bench_data.py

It prints a markdown table of medians over `--repeats` runs: images per second for generating `--n` fusions, with
the sprite tables already loaded, and seconds to reload the same set from the cache. Each reload runs in a fresh
Python process, as after a restart. It times the `emoji_fusions` call, which maps the file, and then reading every
byte of the images once. The file was written just before, so it is most likely in the operating system's file cache.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fusion_tutorial.data import emoji_fusions, fusion_cache_path, make_fusions


def cpu_name() -> str:
    "Return the processor's model name from /proc/cpuinfo, or platform.processor() elsewhere."
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"): return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown processor"


def timed(function) -> float:
    "Run `function` once and return the wall-clock seconds it took."
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


RELOAD = """
import sys, time
from fusion_tutorial.data import emoji_fusions
start = time.perf_counter()
data = emoji_fusions(int(sys.argv[1]), int(sys.argv[2]), folder=sys.argv[3])
loaded = time.perf_counter()
data.images.view(-1, 4096).amax(1)  # read every byte once
print(loaded - start, time.perf_counter() - start)
"""


def reload_in_fresh_process(n: int, seed: int, folder: str) -> tuple[float, float]:
    "Reload a cached set in a new Python process; return the seconds to map it and to map and read it all."
    result = subprocess.run([sys.executable, "-c", RELOAD, str(n), str(seed), folder],
                            capture_output=True, text=True, check=True)
    mapped, read = result.stdout.strip().splitlines()[-1].split()
    return float(mapped), float(read)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=18_900, help="number of fusions per run (default: 18,900)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement; the median is reported")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated set")
    args = parser.parse_args()

    make_fusions(1)  # load the Twemoji PNGs and prepare the sprite tables once, outside the timed runs
    generate = [timed(lambda: make_fusions(args.n, args.seed)) for _ in range(args.repeats)]

    with tempfile.TemporaryDirectory() as folder:
        write = timed(lambda: emoji_fusions(args.n, args.seed, folder=folder))
        size = fusion_cache_path(args.n, args.seed, folder=folder).stat().st_size
        reload = [reload_in_fresh_process(args.n, args.seed, folder) for _ in range(args.repeats)]

    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), numpy {np.__version__}, Python {platform.python_version()}; "
          f"load average before the table {load}")
    print()
    print(f"| measurement ({args.n:,} images, median of {args.repeats}) | result | all runs |")
    print("|---|---|---|")
    print(f"| generate with `make_fusions` | {args.n / statistics.median(generate):,.0f} images/s | "
          + ", ".join(f"{args.n / seconds:,.0f}" for seconds in generate) + " images/s |")
    print(f"| generate and write the cache file ({size / 2**20:,.0f} MiB) | {write:.2f} s | one run |")
    for column, name in enumerate(["reload from the cache with `emoji_fusions` (maps the file)",
                                   "reload and read every byte once"]):
        seconds = [run[column] for run in reload]
        print(f"| {name}, fresh process | {statistics.median(seconds):.3f} s | "
              + ", ".join(f"{value:.3f}" for value in seconds) + " s |")


if __name__ == "__main__":
    main()
