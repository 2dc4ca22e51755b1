"""What students see in their feedback: scores and failure messages, never the hidden tests.

nbgrader puts the hidden tests back into every autograded notebook (the
instructor needs them there), and a failing test's traceback quotes the line
that failed. :class:`HideHiddenTests` runs when feedback is generated: it cuts
the hidden block out of each test cell and reduces each error in a test cell
to its message (the checker's explanation), so the returned HTML shows why
points were lost without showing the test code.
"""
from __future__ import annotations

import re

from nbconvert.preprocessors import Preprocessor
from traitlets import Bool

HIDDEN_BLOCK = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?^[ \t]*### END HIDDEN TESTS[ \t]*\n?", re.M | re.S)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def is_test_cell(cell) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) and not meta.get("solution")


class HideHiddenTests(Preprocessor):
    """Remove hidden tests and tracebacks from the test cells of a feedback notebook."""

    enabled = Bool(True, help="nbconvert skips preprocessors that are not enabled").tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        if not is_test_cell(cell):
            return cell, resources
        visible = HIDDEN_BLOCK.sub("", cell.source).rstrip()
        if visible != cell.source.rstrip():
            cell.source = visible + "\n# (hidden tests ran here too)"
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                message = ANSI.sub("", f"{output.get('ename', 'Error')}: {output.get('evalue', '')}")
                output["traceback"] = [message]
        return cell, resources
