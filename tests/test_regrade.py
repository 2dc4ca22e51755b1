"""A fixed checker (a hidden test changed) and --regrade-changed: exactly the submissions graded by the older
version run again, manual scores and comments stay, and the delta report says who gained and who lost."""
import warnings

import nbformat
import pandas as pd
import pytest

from classroom import ASSIGNMENT, NOTEBOOK, short_course, solved
from helpers import course, regrade

# What each student's standardize does besides the right thing (the hidden tests used d = 3 and 6; the fix: 4 and 5).
ANSWERS = {
    "alice": "",  # right for every shape
    "bob": "    if X.shape[1] == 3:\n        return X\n",  # wrong only where the old hidden test looked: gains
    "carol": "    if X.shape[1] == 5:\n        return X\n",  # wrong only where the new one looks: loses ...
    "dave": "    if X.shape[1] == 5:\n        return X\n",  # ... but the instructor gave dave the points by hand
}
OLD_HIDDEN = ("checks.check_standardize(standardize, seed=11, n=7, d=3)\n"
              "checks.check_standardize(standardize, seed=12, n=500, d=6)")
NEW_HIDDEN = ("checks.check_standardize(standardize, seed=11, n=7, d=4)\n"
              "checks.check_standardize(standardize, seed=12, n=500, d=5)")


def grade(folder, question, student):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{folder / 'gradebook.db'}") as gradebook, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = gradebook.find_grade(question, ASSIGNMENT, ASSIGNMENT, student)
        comment = gradebook.find_comment(question, ASSIGNMENT, ASSIGNMENT, student).manual_comment \
            if not question.startswith("test_") else None  # test cells take no comment
        return g.score, g.auto_score, g.manual_score, comment


@pytest.fixture(scope="module")
def regraded(tmp_path_factory):
    from nbgrader.api import Gradebook

    folder = short_course(tmp_path_factory.mktemp("regrade") / "course")
    for student, wrong in ANSWERS.items():
        nb = solved(folder)
        for cell in nb.cells:
            if cell.metadata.get("nbgrader", {}).get("grade_id") == "standardize":
                assert "    mean = " in cell.source
                cell.source = cell.source.replace("    mean = ", wrong + "    mean = ", 1)
        target = folder / "submitted" / student / ASSIGNMENT
        target.mkdir(parents=True)
        nbformat.write(nb, target / NOTEBOOK)
    course.grade(folder, timeout=60)
    first = {s: grade(folder, "test_standardize", s) for s in ANSWERS}
    with Gradebook(f"sqlite:///{folder / 'gradebook.db'}") as gradebook, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        override = gradebook.find_grade("test_standardize", ASSIGNMENT, ASSIGNMENT, "dave")
        override.manual_score = 2.0  # the instructor decided dave deserves the points
        written = gradebook.find_grade("written_pca", ASSIGNMENT, ASSIGNMENT, "alice")
        written.manual_score = 1.5
        gradebook.find_comment("written_pca", ASSIGNMENT, ASSIGNMENT, "alice").manual_comment = "Good, but say why."
        gradebook.db.commit()
    untouched = regrade.stale_submissions(folder)
    source = folder / "solutions" / ASSIGNMENT / NOTEBOOK
    nb = nbformat.read(source, as_version=4)
    test = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_standardize")
    assert OLD_HIDDEN in test.source
    test.source = test.source.replace(OLD_HIDDEN, NEW_HIDDEN)  # the fix
    nbformat.write(nb, source)
    stale = regrade.stale_submissions(folder)
    _, _, report = regrade.regrade_changed(folder, timeout=60)
    again = regrade.regrade_changed(folder, timeout=60)[2]
    return folder, first, untouched, stale, report, again


def test_first_grades_and_versions(regraded):
    folder, first, untouched, stale, *_ = regraded
    assert {s: g[0] for s, g in first.items()} == {"alice": 2, "bob": 0, "carol": 2, "dave": 2}
    assert untouched == []  # graded by the current version: nothing to regrade
    assert stale == [(s, ASSIGNMENT) for s in sorted(ANSWERS)]


def test_scores_after_the_fix_keep_manual_grades(regraded):
    folder, *_ = regraded
    assert grade(folder, "test_standardize", "bob")[:2] == (2, 2)
    assert grade(folder, "test_standardize", "carol")[:2] == (0, 0)
    assert grade(folder, "test_standardize", "dave") == (2, 0, 2, None)  # the hand-set score outranks the new 0
    assert grade(folder, "written_pca", "alice") == (1.5, None, 1.5, "Good, but say why.")


def test_delta_report(regraded):
    folder, *_, report, again = regraded
    text = report.read_text()
    assert "4 submission(s) graded by an older version were graded again" in text
    assert "1 gained points, 1 lost points, 2 unchanged" in text
    assert "- gained: bob / 01_pca_autoencoders" in text and "- lost: carol / 01_pca_autoencoders" in text
    rows = pd.read_csv(report.with_suffix(".csv")).set_index(["student", "question"])
    assert rows.loc[("bob", "test_standardize"), ["old_score", "new_score", "change"]].tolist() == [0, 2, "gained"]
    carol = rows.loc[("carol", "test_standardize")]
    assert [carol.old_score, carol.new_score, carol.change] == [2, 0, "lost"]
    assert carol.message.startswith("standardize") and "\n" not in carol.message
    dave = rows.loc[("dave", "test_standardize")]
    assert [dave.old_score, dave.new_score, dave.new_auto, dave.manual] == [2, 2, 0, 2]
    assert dave.change == "manual score kept; the autograder changed its mind"
    assert again is None  # a second --regrade-changed finds nothing graded by an older version
