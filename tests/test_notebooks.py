"""Static checks of the notebooks: every cell that draws a figure has its picture saved for the docs."""
import json
import re
from pathlib import Path

import pytest

root = Path(__file__).resolve().parent.parent
FIGURE_CALL = re.compile(r"\b(show_images|plot_history|plt\.(show|plot|subplots|figure|bar|imshow|hist)|\w+_figure)\(")


def figure_cells(notebook: Path):
    for index, cell in enumerate(json.loads(notebook.read_text())["cells"]):
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or source.lstrip().startswith("#| export"): continue
        if "plt.close(" in source: continue  # a test cell that builds a figure only to check it and closes it
        if FIGURE_CALL.search(source): yield index, cell


@pytest.mark.parametrize("notebook", sorted((root / "nbs").glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_figure_cells_have_saved_images(notebook):
    missing = [index for index, cell in figure_cells(notebook)
               if not any("image/png" in output.get("data", {}) for output in cell.get("outputs", []))]
    assert not missing, (f"{notebook.name}: cells {missing} draw figures but have no saved image; "
                         "run `python tools/run_notebooks.py nbs/" + notebook.name + "` and `nbdev_clean`")
