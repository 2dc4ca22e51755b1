"""The PDF from pip's tools (pandoc and Typst): what a notebook shows, read back from the PDF."""
import io

import nbformat
from nbconvert.exporters import get_exporter
from pdf_text import pdf_text_and_images

from helpers.pdf_export import TypstPDFExporter


def png(colour: str = "teal") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def figure_output():
    import base64

    return nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(png()).decode(), "text/plain": "<Figure>"})


def notebook() -> nbformat.NotebookNode:
    table = ("<style scoped>.dataframe td {color: red}</style><table class='dataframe'><thead><tr><th></th>"
             "<th>bill_length_mm</th></tr></thead><tbody><tr><th>mean</th><td>43.9</td></tr></tbody></table>")
    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Penguins and maths\n\nInline $\\alpha^2 + \\beta$ and display\n\n"
                                      "$$\\sum_{n=1}^N \\lVert x_n \\rVert^2 \\leq \\mathbb{E}[X]$$"),
        nbformat.v4.new_code_cell("checks.check_pca(pca)", outputs=[
            nbformat.v4.new_output("stream", text="✔ pca matches scikit-learn\n✘ standardize: wrong mean\n")]),
        nbformat.v4.new_code_cell("df", outputs=[
            nbformat.v4.new_output("execute_result", data={"text/html": table, "text/plain": "frame"}, execution_count=2)]),
        nbformat.v4.new_code_cell("plt.show()", outputs=[figure_output()]),
    ])


def test_the_pdf_shows_headings_maths_code_checks_tables_and_figures():
    pdf, resources = TypstPDFExporter().from_notebook_node(notebook())
    text, images = pdf_text_and_images(io.BytesIO(pdf))
    assert pdf.startswith(b"%PDF") and resources["output_extension"] == ".pdf" and resources["outputs"] == {}
    assert "Penguins and maths" in text and "checks.check_pca(pca)" in text
    assert all(symbol in text for symbol in ("α", "β", "∑", "‖", "≤"))  # maths typeset, not left as TeX
    assert "\\alpha" not in text and "\\sum" not in text
    assert "✔ pca matches scikit-learn" in text and "✘ standardize: wrong mean" in text
    assert "bill_length_mm" in text and "43.9" in text and "color: red" not in text and "<td>" not in text
    assert images == 1


def test_image_links_reach_only_the_notebook_folder(tmp_path):
    """A markdown cell's image inside the notebook's folder is shown; one elsewhere is named, never read, and
    costs neither the PDF nor anything outside the folder."""
    folder = tmp_path / "notebook"
    folder.mkdir()
    (folder / "mine.png").write_bytes(png("orange"))  # Typst stores identical images once
    (tmp_path / "outside.png").write_bytes(png())
    nb = notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell('![mine](mine.png) ![up](../outside.png) ![abs](/etc/passwd) '
                                                  '![odd](x"]#panic().png)'))
    pdf, _ = TypstPDFExporter().from_notebook_node(nb, resources={"metadata": {"path": str(folder)}})
    text, images = pdf_text_and_images(io.BytesIO(pdf))
    assert images == 2  # the figure output and mine.png
    assert "(image not found: ../outside.png)" in text and "(image not found: /etc/passwd)" in text
    assert 'x"]#panic().png' in text


def test_nbconvert_finds_the_exporter_by_name():
    assert get_exporter("typstpdf") is TypstPDFExporter
