"""What students see in their feedback: each test's verdict and message, never the hidden tests.

nbgrader puts the hidden tests back into every autograded notebook (the
instructor needs them there), and a test cell's outputs may hold more than its
verdict (a traceback quoting the failing line, what the student's code printed
while it was checked). :class:`HideHiddenTests` runs when feedback is generated:
it cuts the hidden block out of every code cell, keeps of a test cell's outputs
only the checkers' ✔ / ✘ lines and each error's message (the grader writes a
failed verdict as an error named ``CheckFailed`` with the checker's
explanation), and hides any other output that quotes a line of the hidden tests
(a later cell printing IPython's input history). The returned HTML shows why
points were lost without showing the test code. The page itself is made inert
by :mod:`helpers.review_html`, which formgrader shares.
"""
from __future__ import annotations

import re

from nbconvert.preprocessors import Preprocessor
from nbformat.v4 import new_output
from traitlets import Bool

HIDDEN_BLOCK = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?^[ \t]*### END HIDDEN TESTS[ \t]*\n?", re.M | re.S)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
VERDICT_MARKS = ("✔", "✘")
QUOTE_MIN = 10  # shorter hidden lines (`x = 1`) are too common to tell a quote from a coincidence


def is_test_cell(cell) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) and not meta.get("solution")


class HideHiddenTests(Preprocessor):
    """Remove hidden tests, tracebacks and anything but verdicts from the test cells of a feedback notebook."""

    enabled = Bool(True, help="nbconvert skips preprocessors that are not enabled").tag(config=True)

    def preprocess(self, nb, resources):
        resources["hidden_lines"] = {line.strip() for cell in nb.cells if cell.cell_type == "code"
                                     for block in HIDDEN_BLOCK.findall(cell.source) for line in block.splitlines()
                                     if len(line.strip()) >= QUOTE_MIN and "HIDDEN TESTS" not in line}
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return cell, resources
        visible = HIDDEN_BLOCK.sub("", cell.source).rstrip()
        if visible != cell.source.rstrip():
            cell.source = visible + "\n# (hidden tests ran here too)"
        if is_test_cell(cell):
            cell.outputs = [kept for kept in map(_verdict, cell.get("outputs", [])) if kept is not None]
        else:
            cell.outputs = [_unless_quoting(output, resources["hidden_lines"]) for output in cell.get("outputs", [])]
        return cell, resources


def _verdict(output):
    """A test cell's output reduced to what the checkers decided: ✔ / ✘ lines, an error's message."""
    if output.get("output_type") == "error":
        output["traceback"] = [ANSI.sub("", f"{output.get('ename', 'Error')}: {output.get('evalue', '')}")]
        return output
    if output.get("output_type") == "stream":
        lines = [line for line in ANSI.sub("", output.get("text", "")).splitlines() if line.lstrip().startswith(VERDICT_MARKS)]
        if lines:
            output["text"] = "".join(f"{line}\n" for line in lines)
            return output
    return None


def _texts(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


def _unless_quoting(output, hidden_lines):
    text = "\n".join(_texts(output))
    if any(line in text for line in hidden_lines):
        return new_output("stream", name="stdout", text="(output not shown: it quotes the hidden tests)\n")
    return output
