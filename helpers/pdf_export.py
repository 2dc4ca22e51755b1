"""A notebook's PDF from wheels alone: nbconvert's markdown, typeset by pandoc (``pypandoc-binary``) and Typst (``typst``).

    jupyter nbconvert --to typstpdf NOTEBOOK.ipynb        (where the course's helpers are pip-installed)
    jupyter nbconvert --to helpers.pdf_export.TypstPDFExporter NOTEBOOK.ipynb   (anywhere helpers imports)

Neither TeX nor a system pandoc is needed, so the student's hand-in works on Linux, macOS and Windows
from ``pip install`` alone; ``jupyter nbconvert --to pdf`` (LaTeX) stays available where TeX is installed.
The PDF shows what the notebook shows: headings, markdown with its maths (pandoc turns TeX maths into
Typst's), code, text outputs (the checks' ✔/✘ lines), PNG/JPEG figures, and HTML tables (DataFrames),
which pandoc turns into real tables.

What it trusts: nothing in the notebook, which is the student's. Its text is typeset, never run:
pandoc's Typst writer escapes the text, raw Typst, TeX or HTML in a markdown cell is shown as text
(pandoc's raw_* extensions are off), and Typst compiles with a scratch folder as its root, holding
only the document and the notebook's images, so that an image link cannot read a file elsewhere (one
in the notebook's own folder is copied in; any other is shown as its name).
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

from nbconvert.exporters import Exporter, MarkdownExporter
from nbconvert.preprocessors import Preprocessor
from traitlets.config import Config

# implicit_figures off: nbconvert writes each figure as ![png](file), which would become "Figure 1: png".
# raw_html off: HTML that pandoc cannot turn into markdown is shown as text rather than silently dropped.
MARKDOWN = "markdown-implicit_figures-raw_html-raw_tex-raw_attribute"
# pandoc's Typst template settings (a metadata file: the margins are a map, which -V cannot give). The text is
# in Libertinus Serif, code and outputs in DejaVu Sans Mono, which has the checks' ✔ ✘: both are embedded in
# Typst, so the PDF is the same on every system (system fonts are not looked at).
PAGE = """papersize: a4
fontsize: 10pt
margin: {x: 2cm, y: 2cm}
page-numbering: "1"
"""
# Code and outputs a size smaller on a grey ground, as in JupyterLab; a figure never wider than the text is
# Typst's own default.
STYLE = """#show raw.where(block: true): set text(size: 8pt)
#show raw.where(block: true): block.with(fill: luma(246), inset: 5pt, radius: 2pt, width: 100%)
#let image-missing(path, ..arguments) = text(size: 8pt, fill: red)[(image not found: #path)]
"""
TABLE = re.compile(r"<table", re.I)
IMAGE = re.compile(r'image\("((?:[^"\\]|\\.)*)"')  # pandoc writes every image as image("path")


class TablesAsMarkdown(Preprocessor):
    """HTML outputs (a DataFrame's table) converted to markdown, which the Typst writer typesets as tables."""

    def preprocess_cell(self, cell, resources, index):
        import pypandoc

        for output in cell.get("outputs", []):
            html = output.get("data", {}).get("text/html")
            if html and TABLE.search(html if isinstance(html, str) else "".join(html)):
                html = html if isinstance(html, str) else "".join(html)
                # pandas' <style> block would be kept as text: the table alone is what the notebook shows.
                html = re.sub(r"(?is)<style.*?</style>", "", html)
                output["data"]["text/markdown"] = pypandoc.convert_text(html, "markdown-raw_html-native_divs-native_spans",
                                                                        format="html")
        return cell, resources


class TypstPDFExporter(Exporter):
    """nbconvert exporter: the notebook as a PDF typeset by pandoc and Typst (no TeX, no system packages)."""

    export_from_notebook = "PDF via Typst"
    output_mimetype = "application/pdf"

    def _file_extension_default(self):
        return ".pdf"

    def markdown(self) -> MarkdownExporter:
        """nbconvert's markdown export, figures extracted; tables as markdown first, leftover HTML last."""
        config = Config(self.config)
        config.merge(Config({"MarkdownExporter": {"preprocessors": [TablesAsMarkdown]},
                             "NbConvertBase": {"display_data_priority": [
                                 "text/markdown", "image/png", "image/jpeg", "text/latex", "text/plain", "text/html"]}}))
        return MarkdownExporter(config=config)

    def from_notebook_node(self, nb, resources=None, **kw):
        import pypandoc
        import typst

        nb, resources = super().from_notebook_node(nb, resources, **kw)  # this exporter's own preprocessors
        markdown, resources = self.markdown().from_notebook_node(nb, resources)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            extracted = resources.pop("outputs", None) or {}
            for name, data in extracted.items():
                # nbconvert's own names (output_<cell>_<n>.png, under <notebook>_files/ from the command line).
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(data)
            (root / "page.yaml").write_text(PAGE, encoding="utf-8")
            source = pypandoc.convert_text(markdown, "typst", format=MARKDOWN, extra_args=[
                "--standalone", f"--metadata-file={root / 'page.yaml'}"])
            source = IMAGE.sub(lambda m: self._image(m, root, set(extracted), resources), source)
            document = root / "notebook.typ"
            document.write_text(STYLE + source, encoding="utf-8")
            try:
                pdf = typst.compile(str(document), root=str(root), ignore_system_fonts=True)
            except typst.TypstError as error:  # its message names the line of the document
                raise PDFError(f"Typst could not typeset the notebook: {str(error)[:800]}") from error
        resources["output_extension"] = ".pdf"
        resources["outputs"] = {}  # the figures are inside the PDF: nothing for nbconvert to write beside it
        return pdf, resources

    @staticmethod
    def _image(match, root: Path, extracted: set, resources) -> str:
        """A figure's path inside the scratch root: nbconvert's extracted outputs are there already; an image
        a markdown cell links to is copied in from the notebook's folder (nothing outside it); any other is
        shown as its name, so that one bad link does not cost the whole PDF."""
        name = match.group(1).replace('\\"', '"').replace("\\\\", "\\")
        if name in extracted:
            return match.group(0)
        folder = (resources.get("metadata") or {}).get("path")  # the notebook's folder, where nbconvert knows it
        source = (Path(folder) / name).resolve() if folder else None
        if source and source.is_relative_to(Path(folder).resolve()) and source.is_file() \
                and source.suffix.lower() in (".png", ".jpg", ".jpeg", ".gif", ".svg"):
            copy = f"linked_{len(list(root.iterdir()))}{source.suffix.lower()}"
            (root / copy).write_bytes(source.read_bytes())
            return f'image("{copy}"'
        return f'image-missing("{match.group(1)}"'  # STYLE's stand-in prints the path as text, takes the same arguments


class PDFError(RuntimeError):
    """pandoc or Typst could not make the PDF; the message says where."""
