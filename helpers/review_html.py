"""Review pages run no student script: submissions rendered inert for formgrader and feedback.

Formgrader shows a submission inside the instructor's Jupyter session, where a script could open a
terminal, read ``solutions/`` or write the gradebook; feedback pages are HTML files the instructor
hands out and may open too. nbgrader 0.9.6 renders both with nbconvert's ``HTMLExporter`` and its own
``formgrade`` and ``feedback`` templates, which put a markdown cell through ``markdown2html`` and a
``text/html`` output on the page as they are, emit ``application/javascript`` and widget outputs as
``<script>``, and write an image's ``width``/``height`` metadata into an unquoted attribute. nbconvert's
own ``HTMLExporter.sanitize_html`` (bleach) does not help here: those templates' markdown blocks never
call its ``clean_html``, and its ``SanitizeHTML`` preprocessor cleans the markdown *source*, which
misses the links markdown itself makes (``[x](javascript:…)``) and escapes ``<`` inside maths.

So this module is configured once on ``HTMLExporter`` (``nbgrader_config.py``) and serves both pages:

- :class:`SanitizedMarkdown` replaces the ``markdown2html`` filter: nbconvert's rendering (the cell's
  attachments, maths left as text for MathJax), then :func:`clean` on the resulting HTML;
- :class:`SanitizeOutputs` keeps only outputs the templates show as inert (text, which they escape;
  PNG/JPEG checked to be base64; SVG, which they embed as an ``<img>``; ``text/html`` through
  :func:`clean`), rebuilds output metadata to numeric sizes, and drops widget state.

Trusted: nh3 (the ammonia sanitiser, parsing HTML as a browser does), nbconvert's markdown renderer
and escaping filters, and nbgrader's templates themselves (their own scripts run; nothing a student
wrote is placed where a script would read it). MathJax is loaded with its ``Safe`` extension, which
drops ``javascript:`` links written in TeX.
"""
from __future__ import annotations

import base64
import binascii
import re

import nh3
from jinja2 import pass_context
from nbconvert.preprocessors import Preprocessor
from pygments.token import STANDARD_TYPES
from traitlets import Bool
from traitlets.config import LoggingConfigurable

# Formgrader's scripts find their score fields by id and class: a student's markup gets no id, and only
# the classes that code highlighting and heading links put there (none of which formgrader uses).
ALLOWED_CLASSES = {"span": {c for c in STANDARD_TYPES.values() if c}, "div": {"highlight"}, "a": {"anchor-link"}}
# data: only for images of these types; an image's src is otherwise a path beside the notebook, so
# opening a page loads nothing from elsewhere (no tracking pixels, no leaks by URL).
IMAGE_DATA = re.compile(r"data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]*\Z", re.I)
HAS_SCHEME = re.compile(r"^\s*[a-z][a-z0-9+.\-]*:", re.I)
SAFE_OUTPUTS = {"text/plain", "text/latex", "text/markdown", "image/png", "image/jpeg", "image/svg+xml"}
BASE64_IMAGES = {"image/png", "image/jpeg"}
GRADE_ID = re.compile(r"^[\w\-]+\Z")  # what nbgrader's formgrader writes into its pages' id attributes


def _attribute(tag: str, name: str, value: str) -> str | None:
    if name == "src":
        if IMAGE_DATA.match(value):
            return value
        return None if HAS_SCHEME.match(value) or value.lstrip().startswith(("/", "\\")) else value
    if name == "href" and value.lower().lstrip().startswith("data:"):
        return None
    return value


_CLEANER = nh3.Cleaner(
    attributes={**nh3.ALLOWED_ATTRIBUTES, "*": {"title"}, "img": {"src", "alt", "width", "height"}},
    allowed_classes=ALLOWED_CLASSES,
    url_schemes={"http", "https", "mailto", "data"},  # data: only where _attribute keeps it
    attribute_filter=_attribute,
)


def clean(html: str) -> str:
    """``html`` with nothing that runs, loads from elsewhere or restyles the page (no script, handler,
    javascript: URL, frame, object, form or style)."""
    return _CLEANER.clean(html)


@pass_context  # jinja hands the filter the template context (the cell, for its attachments)
class SanitizedMarkdown(LoggingConfigurable):
    """The ``markdown2html`` filter of the exporter it is configured on, its HTML passed through :func:`clean`."""

    def __call__(self, context, source):
        return clean(self.parent.markdown2html(context, source))


class SanitizeOutputs(Preprocessor):
    """Keep only outputs the review templates render inert; sanitise ``text/html`` and raw cells."""

    enabled = Bool(True, help="nbconvert skips preprocessors that are not enabled").tag(config=True)

    def preprocess(self, nb, resources):
        nb.metadata.pop("widgets", None)  # widget state: read by the widget manager's script
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        meta = cell.metadata.get("nbgrader")
        if isinstance(meta, dict) and not GRADE_ID.match(str(meta.get("grade_id", ""))):
            del cell.metadata["nbgrader"]  # nbgrader never writes such an id; its templates would print it raw
        if cell.cell_type == "raw":
            cell.source = clean(cell.source)
        if cell.cell_type != "code":
            return cell, resources
        if not isinstance(cell.get("execution_count"), int):
            cell.execution_count = None  # printed raw in the prompt
        cell.outputs = [kept for kept in map(_inert, cell.get("outputs", [])) if kept is not None]
        return cell, resources


def _inert(output):
    kind = output.get("output_type")
    if kind == "stream":
        return output if output.get("name") in ("stdout", "stderr") and isinstance(output.get("text"), str) else None
    if kind == "error":
        return output
    if kind not in ("display_data", "execute_result"):
        return None
    data = {}
    for mime, value in output.get("data", {}).items():
        value = "".join(value) if isinstance(value, list) else value
        if not isinstance(value, str):
            continue
        if mime == "text/html":
            data[mime] = clean(value)
        elif mime in BASE64_IMAGES and _is_base64(value) or mime in SAFE_OUTPUTS - BASE64_IMAGES:
            data[mime] = value
    if not data:
        return None
    output.data = data
    # The templates write an image's width and height unquoted; nothing else of the metadata is needed.
    output.metadata = {mime: {k: v for k, v in sizes.items() if k in ("width", "height") and type(v) is int}
                       for mime, sizes in output.get("metadata", {}).items()
                       if mime in data and isinstance(sizes, dict)}
    return output


def _is_base64(value: str) -> bool:
    try:
        base64.b64decode(value.replace("\n", ""), validate=True)
        return True
    except (binascii.Error, ValueError):
        return False
