"""The documentation site, built offline and opened page by page in headless Chromium."""
import ast
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

root = Path(__file__).resolve().parent.parent
artifacts = root / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def notebooks():
    "Every page of the site: the numbered chapters, the home page and the reference pages."
    return sorted((root / "nbs").glob("*.ipynb"))


def exported_names(notebook: Path) -> list[str]:
    "Return the public names that a notebook's `#| export` cells define."
    cells = json.loads(notebook.read_text())["cells"]
    names = []
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or not source.lstrip().startswith("#| export"): continue
        for node in ast.parse(source).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                names.append(node.name)
    return names


def image_outputs(notebook: Path) -> int:
    "Count the figures a page must show: saved image outputs and images that its markdown links."
    cells = json.loads(notebook.read_text())["cells"]
    saved = sum("image/png" in output.get("data", {}) for cell in cells for output in cell.get("outputs", []))
    # Images on other hosts, such as the Colab badge, cannot load offline and are not counted.
    linked = sum(len(re.findall(r"!\[[^\]]*\]\((?!https?:)", "".join(cell["source"])))
                 for cell in cells if cell["cell_type"] == "markdown")
    return saved + linked


def table_rows(notebook: Path) -> int:
    "Count the body rows of the markdown tables in a page."
    cells = json.loads(notebook.read_text())["cells"]
    lines = [line for cell in cells if cell["cell_type"] == "markdown" for line in "".join(cell["source"]).splitlines()]
    rows = [line for line in lines if line.startswith("|") and not line.startswith("|---")]
    headers = sum(line.startswith("|---") for line in lines)
    return len(rows) - headers


@pytest.fixture(scope="module")
def site():
    result = subprocess.run([sys.executable, str(root / "tools" / "build_docs.py")], cwd=root,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = root / "_proc" / "_docs"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists(): pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium package")
    with tempfile.TemporaryDirectory() as profile, playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield context
        context.close()


def is_offline_expected(message) -> bool:
    "Tell whether a console error is a failed load that offline CI expects: another host, or the browser's favicon."
    url = (message.location or {}).get("url", "")
    if not message.text.startswith("Failed to load resource"): return False
    return not url.startswith("http://127.0.0.1:") or url.endswith("/favicon.ico")


def open_page(browser, url):
    "Load `url` and return the page with the console errors and uncaught exceptions it produced."
    page = browser.new_page()
    errors = []
    # The CI machine has no internet: requests to other hosts (the KaTeX CDN) are aborted at once.
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("http://127.0.0.1:")
               else route.abort())
    page.on("console", lambda message: errors.append(f"{message.text} ({(message.location or {}).get('url')})")
            if message.type == "error" and not is_offline_expected(message) else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    response = page.goto(url, wait_until="load")
    page.wait_for_timeout(300)
    return page, response, errors


@pytest.mark.parametrize("notebook", notebooks(), ids=lambda path: path.stem)
def test_page_renders(site, browser, notebook):
    folder, base = site
    name = notebook.stem + ".html"
    assert (folder / name).is_file(), f"{name} was not built"
    page, response, errors = open_page(browser, f"{base}/{name}")
    assert response.status == 200
    assert errors == [], errors
    for symbol in exported_names(notebook):
        assert page.locator(f"[id='{symbol.lower()}']").count() >= 1, f"no API entry for {symbol} in {name}"
    images = page.eval_on_selector_all("main img", "images => images.filter(i => i.complete && i.naturalWidth > 0).length")
    assert images >= image_outputs(notebook), f"{name}: {images} loaded images, the notebook has {image_outputs(notebook)}"
    rows = page.locator("main table tbody tr").count()
    assert rows >= table_rows(notebook), f"{name}: {rows} table rows rendered, the notebook's markdown has {table_rows(notebook)}"
    if notebook.stem in ("index", "05_training"):
        artifacts.mkdir(exist_ok=True)
        page.set_viewport_size({"width": 1280, "height": 900})
        page.screenshot(path=str(artifacts / f"docs-{notebook.stem}.png"), full_page=False)
    page.close()
