"""Rewrite the bad-input table of the docs page nbs/reliability.ipynb from the cases in tests/test_bad_input.py.

    python tools/make_reliability_page.py

Runs every case (about a minute on a 2-core CPU, most of it spent starting console scripts) and puts each message, as the user sees it,
between the table markers of the page. `pytest tests/test_bad_input.py` fails when the table is out of date.
"""
import json
import sys
import tempfile
from pathlib import Path

root = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(root / "tests"))
import test_bad_input as cases  # noqa: E402

START, END = "<!-- bad-input table: start -->", "<!-- bad-input table: end -->"


def table(messages: dict) -> str:
    lines = ["| name | entry point | input | failure | message |", "|---|---|---|---|---|"]
    for case in cases.CASES:
        kind, message = messages[case.name]
        cells = [f"`{case.name}`", f"`{case.entry}`", case.bad_input, kind, message.replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    messages = {}
    with tempfile.TemporaryDirectory() as scratch:
        trained = cases.make_trained_run(Path(scratch) / "trained" / "run")
        for case in cases.CASES:
            tmp = Path(tempfile.mkdtemp(dir=scratch))
            kind, message = cases.run_case(case, tmp, trained if case.needs_run else None)
            missing = [fragment for fragment in case.expected if fragment not in message]
            if missing: sys.exit(f"{case.name}: {missing} not in {message!r}")
            messages[case.name] = (kind, cases.normalise(message, tmp))
            print(f"{case.name}: {kind}: {messages[case.name][1]}")
    notebook = json.loads(cases.PAGE.read_text())
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        if START in source and END in source:
            before, rest = source.split(START)
            after = rest.split(END)[1]
            cell["source"] = (before + START + "\n\n" + table(messages) + "\n\n" + END + after).splitlines(keepends=True)
            break
    else: sys.exit(f"{cases.PAGE} has no cell with the markers {START} and {END}")
    cases.PAGE.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(messages)} rows to {cases.PAGE.relative_to(root)}")


if __name__ == "__main__":
    main()
