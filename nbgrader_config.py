"""nbgrader configuration: this repository is the course directory."""
c = get_config()  # noqa: F821 (provided by nbgrader)

c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"
# Every assignment folder under solutions/ is released as it is: notebooks only,
# no data or checkpoints copied alongside. timestamp.txt is the submission time that
# `nbgrader collect` (JupyterHub's exchange) and `./kit collect` keep for late penalties.
c.CourseDirectory.include = ["*.ipynb", "timestamp.txt"]

# Per-cell limit when autograding. The `grade` budget keeps every cell under
# ~20 s on a 2-core CPU; a cell that runs past this (an endless loop in a
# submission) is interrupted, scored 0, and grading goes on with the next cell.
c.Execute.timeout = 180
c.Execute.interrupt_on_timeout = True

# nbgrader scores a test cell 0 if it writes to stderr. The checkers keep
# student code's warnings and progress bars off stderr; this catches what
# libraries print around them (warnings, tqdm bars) so they never cost points.
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = r"(Warning|warnings\.warn|\d+%\|)"

# A submission whose test cell was deleted is graded with the cell put back
# (edited test cells are always restored from the gradebook).
c.OverwriteCells.add_missing_cells = True

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# Feedback shows scores and failure messages, never the hidden tests' code
# (nbgrader restores hidden tests in autograded notebooks; see helpers/feedback.py).
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import GetGrades  # noqa: E402

from helpers.feedback import HideHiddenTests  # noqa: E402
from helpers.review_html import SanitizedMarkdown, SanitizeOutputs  # noqa: E402

c.GenerateFeedback.preprocessors = [GetGrades, HideHiddenTests, CSSHTMLHeaderPreprocessor]

# Formgrader and feedback both render with this exporter: a submission's markdown and outputs reach
# the page sanitised (nh3), so no student script runs in the instructor's Jupyter session or in a
# feedback page (see helpers/review_html.py). The SVG of an output stays embedded as an <img>, where
# it cannot run script.
c.HTMLExporter.preprocessors = [SanitizeOutputs]
c.HTMLExporter.filters = {"markdown2html": SanitizedMarkdown}
c.HTMLExporter.skip_svg_encoding = False

# Late work, applied by `./kit export-grades` (helpers/grades_export.py; README, "The term"): for each
# started day past the due date (the gradebook's: `nbgrader db assignment add NAME --duedate=...`, moved
# by the `extension` column of students.csv), this share of the assignment's maximum score is taken from
# the exported total, up to `cap`. 0 takes nothing (late hand-ins are still noted). The gradebook keeps
# the raw scores.
c.LatePolicy.penalty_per_day = 0.0
c.LatePolicy.cap = 1.0
