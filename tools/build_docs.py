"""Build the documentation site offline: nbdev's notebook processing, then the smalldocs renderer.

Users with Quarto build the site with `nbdev_docs`. That command, like `nbdev_proc_nbs`, tries to
download and install Quarto with sudo and curl when Quarto is missing. This script therefore calls the
same nbdev functions from Python and renders the processed pages with smalldocs, a pure-Python
renderer of Quarto projects. The site is written to `_proc/_docs`; smalldocs names each page after its notebook
file (`00_core.html`), where Quarto would use the notebook's title.
"""
import sys
import time
from pathlib import Path

root = Path(__file__).resolve().parent.parent


def build_site(quiet: bool = True) -> Path:
    "Process the notebooks with nbdev, render them with smalldocs, and return the site folder."
    import nbdev.doclinks
    from nbdev.quarto import nbdev_sidebar, refresh_quarto_yml
    from nbdev.serve import proc_nbs
    from smalldocs.site import build

    refresh_quarto_yml()
    nbdev.doclinks._build_modidx()
    nbdev_sidebar.__wrapped__()
    cache = proc_nbs(n_workers=1)
    site = build(str(cache), quiet=quiet)
    # smalldocs ignores Quarto's `output-file` key, which nbdev writes into every page; nothing else may warn.
    unexpected = [w for w in site.warnings if "output-file is not read" not in w]
    if unexpected: raise RuntimeError("smalldocs warnings:\n" + "\n".join(unexpected))
    return cache / "_docs"


if __name__ == "__main__":
    started = time.perf_counter()
    folder = build_site(quiet="-v" not in sys.argv)
    print(f"site written to {folder} in {time.perf_counter() - started:.1f} s")
