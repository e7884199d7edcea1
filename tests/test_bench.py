"""The benchmark suite runs end to end and prints a complete table; the numbers themselves are not asserted."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
EXPECTED_ROWS = ["training speed-up over the PNG baseline", "training FLOP per image", "matmul throughput",
                 "share of the", "encode + decode 3300 images", "emoji fusions (images/s)", "from the cache",
                 "linear probe fit", "peak resident memory", "wall time, main job"]


def test_quick_suite_prints_complete_table(tmp_path):
    page = tmp_path / "performance.ipynb"
    shutil.copy(root / "nbs" / "performance.ipynb", page)
    result = subprocess.run([sys.executable, str(root / "bench" / "run.py"), "--quick", "--json", str(tmp_path / "bench.json"),
                             "--page", str(page), "--plot", str(tmp_path / "throughput.png")],
                            capture_output=True, text=True, timeout=900, env={**os.environ, "MPLBACKEND": "Agg"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("Machine: ")
    assert "| measurement | value | target | met |" in result.stdout
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    labels = " ".join(row[0] for row in rows)
    for expected in EXPECTED_ROWS:
        assert expected in labels, expected
    for label, value, target, met in rows:
        assert value, f"no value for {label}"
        assert (met in ("yes", "no")) == bool(target), f"{label}: target {target!r} but met {met!r}"
    written = "".join("".join(cell["source"]) for cell in json.loads(page.read_text())["cells"])
    assert "`python bench/run.py --quick`" in written
    assert all(row[0] in written for row in rows)
    assert (tmp_path / "throughput.png").stat().st_size > 1000
