import pytest

from helpers import budgets


def test_default_is_full(monkeypatch):
    monkeypatch.delenv("COURSE_BUDGET", raising=False)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    assert budgets.budget_name() == "full"


def test_nbgrader_execution_selects_grade(monkeypatch):
    monkeypatch.delenv("COURSE_BUDGET", raising=False)
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert budgets.budget("01").name == "grade"


def test_variable_wins_and_is_validated(monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    monkeypatch.setenv("COURSE_BUDGET", "FULL")
    assert budgets.budget_name() == "full"
    monkeypatch.setenv("COURSE_BUDGET", "fast")
    with pytest.raises(ValueError, match="full, grade"):
        budgets.budget_name()


def test_both_budgets_define_the_same_sizes():
    for assignment, sizes in budgets.SIZES.items():
        assert set(sizes) == set(budgets.BUDGET_NAMES), assignment
        assert sizes["full"].keys() == sizes["grade"].keys(), assignment
