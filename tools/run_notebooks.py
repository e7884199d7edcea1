"""Execute notebooks with their full (non-test) budget and save the outputs in place.

The docs site shows the figures and tables that are saved in the notebooks, so run this after changing
a chapter, then `nbdev_clean`, and commit. `FUSION_FAST=0` is set so that every training cell uses the
budget its text documents, not the seconds-long test budget. Each notebook's wall time is printed.

    python tools/run_notebooks.py                    # every chapter and the home page
    python tools/run_notebooks.py nbs/05_training.ipynb
"""
import os
import sys
import time
from pathlib import Path

root = Path(__file__).resolve().parent.parent


def run_notebook(path: Path) -> float:
    "Execute `path` top to bottom in a fresh shell, write it back with outputs, and return the seconds taken."
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    notebook = read_nb(path)
    shell = CaptureShell(path=path.parent)
    started = time.perf_counter()
    shell.run_all(notebook, exc_stop=True)
    seconds = time.perf_counter() - started
    write_nb(notebook, path)
    return seconds


if __name__ == "__main__":
    os.environ["FUSION_FAST"] = "0"
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    paths = [Path(p).resolve() for p in sys.argv[1:]] or sorted((root / "nbs").glob("[0-9][0-9]_*.ipynb"))
    for path in paths:
        print(f"{path.name}: {run_notebook(path):.0f} s", flush=True)
