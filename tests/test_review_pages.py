"""Review pages run no student script: formgrader's view and the feedback page of a hostile submission.

The hostile notebook below is rendered through the exporter formgrader builds (nbgrader's ``formgrade``
template, the course's nbgrader_config.py) and checked statically here; tests/test_browser.py opens
both pages in a browser. Each payload would record itself in ``window.pwned`` and the page title.
"""
import base64
import copy
import html.parser
import io
from pathlib import Path

import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from helpers import review_html
from helpers.feedback import HideHiddenTests

ROOT = Path(__file__).resolve().parents[1]


def payload(name: str) -> str:
    """JavaScript that records ``name`` in the top window, if it ever runs (single quotes only)."""
    return f"(top.pwned=top.pwned||[]).push('{name}');top.document.title='pwned'"


def png() -> str:
    """A small, real PNG (base64), so that a kept image visibly loads."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(1, 1), dpi=20)
    axes.plot([0, 1], [0, 1])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


HEADING = "Why PC1 is size"
MATHS = r"\hat\mu = \frac{1}{n}\sum_i x_i"


def hostile_markdown(image: str) -> str:
    """A written answer: a heading, maths and an image, around every kind of markup that could run script."""
    return "\n\n".join([
        f"## {HEADING}",
        f"The mean is ${MATHS}$.",
        f"![a figure](data:image/png;base64,{image})",
        f"<img src=x onerror=\"{payload('img-onerror')}\">",
        f"<script>{payload('script')}</script>",
        f"<iframe srcdoc=\"<script>{payload('iframe-srcdoc')}</script>\"></iframe>",
        f"[click me](javascript:{payload('javascript-link')})",
        f"<a href=\"data:text/html,<script>{payload('data-link')}</script>\">data link</a>",
        f"<svg onload=\"{payload('svg-onload')}\"><circle r=\"3\"></circle></svg>",
        f"<details open ontoggle=\"{payload('details-ontoggle')}\"><summary>s</summary>d</details>",
        "<style>#notebook-container { display: none } /* pwned-style */</style>",
        f"<form action=\"javascript:{payload('form')}\"><button>send</button></form>",
        f"<object data=\"javascript:{payload('object')}\"></object><embed src=\"javascript:{payload('embed')}\">",
    ])


def hostile_outputs(image: str) -> list:
    """Outputs a student's code cell could carry: scripts in every output type, and two honest ones."""
    svg = f"<svg xmlns='http://www.w3.org/2000/svg' onload=\"{payload('svg-output')}\"><circle r='3'/></svg>"
    return [
        new_output("display_data", data={"text/html": f"<b>bold output</b><script>{payload('html-output')}</script>"
                                                      f"<img src=x onerror=\"{payload('html-output-img')}\">",
                                         "text/plain": "<b>"}),
        new_output("display_data", data={"application/javascript": payload("javascript-output")}),
        new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "1", "version_major": 2,
                                                                                       "version_minor": 0},
                                         "text/plain": "widget"}),
        new_output("display_data", data={"text/markdown": f"<img src=x onerror=\"{payload('markdown-output')}\">"}),
        new_output("display_data", data={"image/svg+xml": svg}),
        new_output("display_data", data={"image/png": "x"}, metadata={"image/png": {"width": f"1 onerror={payload('width')}"}}),
        new_output("display_data", data={"image/png": image}, metadata={"image/png": {"width": 40}}),
        new_output("execute_result", data={"text/latex": r"$\sigma^2$", "text/plain": "s"}, execution_count=3),
    ]


HIDDEN_LINE = "checks.check_standardize(standardize, seed=11, n=7, d=3)"


def make_hostile(nb, image: str, written_id: str, test_id: str, code_id: str):
    """Turn an autograded notebook hostile: its written answer, a code cell's outputs, a test cell's outputs."""
    by_id = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nb.cells}
    by_id[written_id].source = hostile_markdown(image)
    by_id[code_id].outputs = hostile_outputs(image) + [
        new_output("stream", name="stdout", text=f"In history: ['{HIDDEN_LINE}']\n")]  # a later print(In)
    by_id[test_id].outputs = [
        new_output("stream", name="stdout", text="✔ standardize: mean 0 and variance 1\nprinted by the student\n"),
        new_output("display_data", data={"text/html": f"<script>{payload('test-output')}</script>", "text/plain": "x"}),
        new_output("error", ename="CheckFailed", evalue="standardize(X) should have mean 0",
                   traceback=["Traceback", f"----> 3 {HIDDEN_LINE}", "CheckFailed: standardize(X) should have mean 0"]),
    ]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2,
                                                                             "version_minor": 0}}
    return nb


def standalone_notebook(image: str):
    """A minimal autograded-looking notebook: a written answer, a code cell and a test cell with hidden tests."""
    def meta(grade_id, **flags):
        return {"nbgrader": {"grade_id": grade_id, "points": 1, "score": 0, "schema_version": 3, "locked": False, **flags}}

    nb = new_notebook(cells=[
        new_markdown_cell("", metadata=meta("written", solution=True, grade=True)),
        new_code_cell("def standardize(X):\n    return X", metadata=meta("answer", solution=True, grade=False)),
        new_code_cell(f"checks.check_standardize(standardize)\n### BEGIN HIDDEN TESTS\n{HIDDEN_LINE}\n### END HIDDEN TESTS",
                      metadata=meta("test", solution=False, grade=True, locked=True)),
    ])
    return make_hostile(nb, image, "written", "test", "answer")


class Live(html.parser.HTMLParser):
    """What in a page could run a payload: its event handlers, script-bearing URLs, scripts, embedding elements.

    nbgrader's own markup has event handlers and scripts too; those never mention ``pwned``.
    """

    def __init__(self):
        super().__init__()
        self.found, self.tag = [], None

    def handle_starttag(self, tag, attrs):
        self.tag = tag
        for name, value in attrs:
            value = (value or "").strip().lower()
            if name.startswith("on") and "pwned" in value or value.startswith(("javascript:", "data:text/html")):
                self.found.append(f"<{tag} {name}={value}>")
        if tag in ("iframe", "object", "embed", "form"):
            self.found.append(f"<{tag}>")

    def handle_data(self, data):
        if self.tag in ("script", "style") and "pwned" in data:
            self.found.append(f"<{self.tag}>{data.strip()}")

    def handle_endtag(self, tag):
        self.tag = None


def live(page: str) -> list[str]:
    parser = Live()
    parser.feed(page)
    return parser.found


def formgrade_exporter(config: Config):
    """The exporter formgrader renders a submission with (nbgrader's FormgradeExtension, given the course config)."""
    from nbconvert.exporters import HTMLExporter
    from nbgrader.server_extensions.formgrader import handlers

    config = copy.deepcopy(config)
    config.HTMLExporter.template_name = "formgrade"
    config.HTMLExporter.extra_template_basedirs = [handlers.template_path]
    return HTMLExporter(config=config)


RESOURCES = {"assignment_id": "a", "notebook_id": "n", "submission_id": "s", "index": 0, "total": 1,
             "base_url": "", "student": "alice", "last_name": "", "first_name": "", "notebook_path": "n.ipynb"}


@pytest.fixture(scope="module")
def image():
    return png()


@pytest.fixture(scope="module")
def course_config():
    return PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config()


def test_unsanitised_formgrader_would_run_every_payload(image):
    """Without the course configuration, nbgrader's template puts the payloads on the page live."""
    page, _ = formgrade_exporter(Config()).from_notebook_node(standalone_notebook(image), resources=dict(RESOURCES))
    found = "\n".join(live(page))
    for name in ("img-onerror", "script", "javascript-link", "svg-onload", "ontoggle", "html-output", "width",
                 "<iframe>", "<form>", "<object>", "<embed>", "pwned-style"):
        assert name in found, name


def test_formgrader_page_is_inert_and_keeps_the_answer(image, course_config):
    page, _ = formgrade_exporter(course_config).from_notebook_node(standalone_notebook(image), resources=dict(RESOURCES))
    body = page[page.index("<body"):]
    assert live(body) == []
    assert "pwned" not in body
    assert f"<h2>{HEADING}" in body and MATHS in body and "<b>bold output</b>" in body
    assert body.count(f"data:image/png;base64,{image}") == 2  # the answer's figure and the output's
    assert 'id="written"' in body  # formgrader's score field for the written answer is still there


def test_clean_keeps_what_an_answer_needs():
    kept = review_html.clean('<h2>T</h2><p>$a&lt;b$</p><table><tr><td>1</td></tr></table>'
                             '<img src="figure.png" alt="f"><a href="https://example.org">x</a><pre><code>x</code></pre>')
    assert kept == ('<h2>T</h2><p>$a&lt;b$</p><table><tbody><tr><td>1</td></tr></tbody></table>'
                    '<img src="figure.png" alt="f"><a href="https://example.org" rel="noopener noreferrer">x</a>'
                    '<pre><code>x</code></pre>')


@pytest.mark.parametrize("markup", [
    '<img src="https://tracker.example/p.png">', '<img src="//tracker.example/p.png">', '<img src="/files/x.png">',
    '<img src="data:image/svg+xml;base64,PHN2Zz4=">', '<p style="background:url(https://x.example)">t</p>',
    '<span id="written" class="score tabbable">t</span>', '<a href="data:text/html,x">t</a>',
])
def test_clean_drops_what_loads_from_elsewhere_or_touches_formgrader(markup):
    kept = review_html.clean(markup)
    for word in ("tracker", "files/", "svg", "style", "score", "id=", "data:"):
        assert word not in kept, (markup, kept)


def test_feedback_keeps_verdicts_and_drops_the_rest(image):
    nb, _ = HideHiddenTests().preprocess(standalone_notebook(image), {})
    answer, test = nb.cells[1], nb.cells[2]
    assert HIDDEN_LINE not in test.source and "hidden tests ran here too" in test.source
    assert [o.output_type for o in test.outputs] == ["stream", "error"]
    assert test.outputs[0].text == "✔ standardize: mean 0 and variance 1\n"           # the verdict, not the print
    assert test.outputs[1].traceback == ["CheckFailed: standardize(X) should have mean 0"]  # no quoted test line
    assert not any(HIDDEN_LINE in str(o) for o in answer.outputs)                     # the print(In) is hidden
    assert "<b>bold output</b>" in str(answer.outputs[0])                             # other outputs stay


def test_feedback_page_shows_no_hidden_test(image, course_config):
    """The exporter GenerateFeedback builds from the course config, with its preprocessors but the gradebook's."""
    from nbgrader.converters import GenerateFeedback
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.preprocessors import GetGrades

    converter = GenerateFeedback(coursedir=CourseDirectory(config=course_config), config=course_config)
    exporter = converter.exporter_class(parent=converter, config=converter.config)
    for preprocessor in converter.preprocessors:
        if preprocessor is not GetGrades:  # reads the gradebook; tests/test_browser.py runs the whole path
            exporter.register_preprocessor(preprocessor, enabled=True)
    page, _ = exporter.from_notebook_node(standalone_notebook(image), resources={"nbgrader": {"notebook": "n", "score": 1, "max_score": 3, "late_penalty": 0}})
    body = page[page.index("<body"):]
    assert live(body) == [] and "pwned" not in body
    assert "seed=11" not in page and "printed by the student" not in page
    assert "✔ standardize: mean 0 and variance 1" in page and "should have mean 0" in page
