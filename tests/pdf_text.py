"""Reading a PDF back for the tests: its text (normalised) and how many images it embeds."""
import re
import unicodedata
from pathlib import Path

from pypdf import PdfReader


def normalise(text: str) -> str:
    # NFKC undoes ligatures (ﬁ → fi); whitespace differs between TeX's line breaks and the source.
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip()


def pdf_text_and_images(path: Path) -> tuple[str, int]:
    reader = PdfReader(path)
    text = " ".join(page.extract_text() or "" for page in reader.pages)
    return normalise(text), sum(len(page.images) for page in reader.pages)
