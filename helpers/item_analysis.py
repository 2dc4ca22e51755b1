"""Item analysis: how each graded question of an assignment worked, from the gradebook and the checkers' verdicts.

    python -m helpers.item_analysis      # also part of ./kit grade's report

Per assignment and graded cell (test cells and written answers): how many students, the mean score,
the share with full marks and with zero, the discrimination (the point-biserial correlation, i.e.
Pearson's r, between the question's score and the rest of the assignment's total: good questions are
passed more by students who do well elsewhere; empty when either side does not vary), and for a test
cell the most frequent failure messages with their counts. Messages come from each test cell's verdict
in ``autograded/<student>/<assignment>/grading.json`` (``verdicts`` → notebook → grade id → ``message``);
numbers in them are replaced by ``#`` so that one cause with different values counts once.

Flags: nobody passed (no student has full marks), everybody passed, and negative discrimination (the
students who pass it do worse elsewhere: the check may be wrong). A score that still waits for a grader
(nbgrader's *needs manual grade*) is left out of its question and of the rest totals.

Written to ``reports/``: ``items.csv`` (one row per assignment and question) and per assignment
``items-<assignment>.png`` (mean share of the points and discrimination per question); ``report.md``
shows the table and the flags (:func:`helpers.report.write_report`).

What is trusted: the gradebook is the instructor's. grading.json's messages are the checkers' and may
quote a value a submission produced, so they are cut to one line of at most ``MESSAGE_CHARS``
characters without control characters before they are grouped or written.
"""
from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import pandas as pd

from .gradebook import read_record

COURSE = Path(__file__).resolve().parents[1]
MESSAGE_CHARS = 160
TOP_MESSAGES = 3
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
COLUMNS = ["assignment", "notebook", "question", "kind", "max_points", "students", "mean", "full_share",
           "zero_share", "discrimination", "flags", "failure_messages"]


def message_group(message: str) -> str:
    """The cause a message names: first line, control characters out, numbers as '#', at most MESSAGE_CHARS."""
    line = (message or "").strip().splitlines()[0] if (message or "").strip() else "(no message)"
    line = "".join(ch for ch in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line) if ch.isprintable())
    return " ".join(NUMBER.sub("#", line).split())[:MESSAGE_CHARS]


def failure_messages(course: Path) -> dict[tuple[str, str, str], Counter]:
    """(assignment, notebook, grade id) -> Counter of grouped messages of the failed verdicts."""
    found: dict[tuple[str, str, str], Counter] = {}
    for path in sorted((course / "autograded").glob("*/*/grading.json")):
        verdicts = read_record(path).get("verdicts", {})  # one that cannot be read adds no messages
        assignment = path.parent.name
        for notebook, cells in verdicts.items() if isinstance(verdicts, dict) else ():
            for grade_id, verdict in cells.items() if isinstance(cells, dict) else ():
                if isinstance(verdict, dict) and verdict.get("passed") is not True:
                    key = (assignment, Path(notebook).stem, grade_id)
                    found.setdefault(key, Counter())[message_group(str(verdict.get("message", "")))] += 1
    return found


def _discrimination(item: pd.Series, rest: pd.Series) -> float:
    if item.nunique() < 2 or rest.nunique() < 2:
        return float("nan")
    return float(item.corr(rest))


def item_table(scores: pd.DataFrame, messages: dict | None = None) -> pd.DataFrame:
    """One row per assignment and question from :func:`helpers.report.question_scores`' rows."""
    messages = messages or {}
    graded = scores[~scores.needs_manual.astype(bool)] if not scores.empty else scores
    rows = []
    for assignment, part in graded.groupby("assignment", sort=True):
        totals = part.groupby("student").score.sum()
        for (notebook, question), rows_q in part.groupby(["notebook", "question"], sort=False):
            item = rows_q.set_index("student").score
            top = float(rows_q.max_score.iloc[0])
            full, zero = float((item >= top).mean()), float((item <= 0).mean())
            r = _discrimination(item, totals[item.index] - item)
            flags = []
            if full == 0:
                flags.append("nobody passed")
            if full == 1:
                flags.append("everybody passed")
            if r < 0:
                flags.append("negative discrimination")
            counts = messages.get((assignment, notebook, question), Counter())
            rows.append(dict(assignment=assignment, notebook=notebook, question=question, kind=rows_q.kind.iloc[0],
                             max_points=top, students=len(item), mean=round(float(item.mean()), 2),
                             full_share=round(full, 2), zero_share=round(zero, 2),
                             discrimination=round(r, 2) if r == r else None, flags="; ".join(flags),
                             failure_messages="; ".join(f"{n}× {m}" for m, n in counts.most_common(TOP_MESSAGES))))
    return pd.DataFrame(rows, columns=COLUMNS)


def item_plot(table: pd.DataFrame, assignment: str, path: Path) -> Path:
    """Mean share of the points (bars) and discrimination (dots) per question of one assignment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table[table.assignment == assignment]
    labels = [q if rows.notebook.nunique() == 1 else f"{n}/{q}" for n, q in zip(rows.notebook, rows.question)]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(rows) + 2), 3.8))
    colours = ["tab:red" if f else "tab:blue" for f in rows["flags"]]
    ax.bar(x, rows["mean"] / rows.max_points, color=colours, alpha=0.7, label="mean share of the points")
    ax.plot(x, rows.discrimination.astype(float), "ko", label="discrimination (r with the rest)")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(ylim=(-1, 1.05), title=f"{assignment}: items (red: flagged)", xticks=list(x))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_items(course: Path, scores: pd.DataFrame | None = None) -> pd.DataFrame:
    """reports/items.csv and reports/items-<assignment>.png; the table."""
    from .report import question_scores

    out = course / "reports"
    out.mkdir(exist_ok=True)
    table = item_table(question_scores(course) if scores is None else scores, failure_messages(course))
    table.to_csv(out / "items.csv", index=False)
    for assignment in table.assignment.unique():
        item_plot(table, assignment, out / f"items-{assignment}.png")
    return table


def markdown(table: pd.DataFrame) -> list[str]:
    """report.md's section: per assignment the table, its figure and the flagged questions."""
    lines = ["## Item analysis", "",
             "Per question: mean score, share with full and with zero marks, discrimination (r between the "
             "question and the rest of the assignment), the most frequent failure messages (reports/items.csv).", ""]
    if table.empty:
        return lines + ["(nothing graded yet)", ""]
    for assignment, rows in table.groupby("assignment", sort=True):
        shown = rows[["notebook", "question", "max_points", "students", "mean", "full_share", "zero_share",
                      "discrimination"]]
        lines += [f"### {assignment}", "", "```", shown.to_string(index=False), "```", "",
                  f"![items of {assignment}](items-{assignment}.png)", ""]
        lines += [f"- **{r.question}**: {r.flags}" for r in rows.itertuples() if r.flags]
        lines += [f"- {r.question} fails with: {r.failure_messages}" for r in rows.itertuples() if r.failure_messages]
        lines.append("")
    return lines


def main(argv: list[str] | None = None, course: Path = COURSE) -> int:
    import argparse

    argparse.ArgumentParser(prog="python -m helpers.item_analysis", description=__doc__.split("\n")[0]).parse_args(argv)
    table = write_items(course)
    if table.empty:
        print("nothing graded yet: run ./kit grade first")
        return 0
    with pd.option_context("display.width", 200, "display.max_colwidth", 80):
        print(table.drop(columns=["failure_messages"]).to_string(index=False))
    for r in table.itertuples():
        if r.failure_messages:
            print(f"{r.assignment} {r.question}: {r.failure_messages}")
    print("\nreports/items.csv, reports/items-<assignment>.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
