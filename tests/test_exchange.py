"""nbgrader's exchange, as a JupyterHub runs it: release, fetch, submit, collect, then grading."""
from classroom import ASSIGNMENT, NOTEBOOK, scores


def test_release_fetch_submit_collect_through_a_local_exchange(hub_course):
    course_dir, logs = hub_course
    for student in ("alice", "bob"):
        folder = course_dir / "submitted" / student / ASSIGNMENT
        assert (folder / NOTEBOOK).is_file() and (folder / "timestamp.txt").is_file()
    assert "PC1 is overall size." in (course_dir / "submitted" / "alice" / ASSIGNMENT / NOTEBOOK).read_text()
    assert scores(course_dir) == {"alice": 2.0, "bob": 0.0}  # alice's answers earn every autograded point
