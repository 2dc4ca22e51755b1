"""Reading a PDF back for the tests: its text (normalised) and how many images it embeds."""
import re
import unicodedata
from pathlib import Path

from pypdf import PdfReader


def normalise(text: str) -> str:
    # NFKC undoes ligatures (ﬁ → fi); whitespace differs between TeX's line breaks and the source.
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip()


def letters(text: str) -> str:
    """Only the letters, lower-cased: robust to TeX's hyphenation, line breaks and punctuation."""
    return re.sub(r"[^a-z]", "", unicodedata.normalize("NFKC", text).lower())


def plain_phrase(markdown: str, words: int = 6) -> str:
    """The first run of ``words`` plain words (no maths, code or markup) in a markdown text."""
    run = []
    for word in markdown.split():
        run = run + [word] if re.fullmatch(r"[A-Za-z][a-z]*[,.;]?", word) else []
        if len(run) == words:
            return " ".join(run)
    raise ValueError("no plain phrase of that length")


def pdf_text_and_images(path: Path) -> tuple[str, int]:
    reader = PdfReader(path)
    text = " ".join(page.extract_text() or "" for page in reader.pages)
    return normalise(text), sum(len(page.images) for page in reader.pages)
