"""Write README.md from nbs/index.ipynb, or check that it is up to date.

nbdev's own `nbdev_readme` needs Quarto. The home page is plain markdown cells, so joining them
gives the same README without it. Image paths are made relative to the repository root.
"""
import argparse
import json
import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent


def render() -> str:
    notebook = json.loads((root / "nbs" / "index.ipynb").read_text(encoding="utf-8"))
    parts = []
    for cell in notebook["cells"]:
        source = "".join(cell["source"]).strip()
        if not source or source.startswith("#| hide"): continue
        if cell["cell_type"] == "markdown": parts.append(source)
        else: parts.append(f"```python\n{source}\n```")
    text = "\n\n".join(parts) + "\n"
    return re.sub(r"\]\((?!https?:|#|/)([^)]+)\)", lambda m: f"](nbs/{m.group(1)})" if m.group(1).startswith("images/") else m.group(0), text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit with 1 if README.md differs from the notebook")
    args = parser.parse_args()
    text = render()
    readme = root / "README.md"
    if args.check:
        if readme.read_text(encoding="utf-8") != text:
            sys.exit("README.md does not match nbs/index.ipynb: run `python tools/make_readme.py` and commit README.md")
    else:
        readme.write_text(text, encoding="utf-8")
