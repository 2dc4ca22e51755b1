"""Checkers called by the autograded test cells.

Each ``check_*`` takes the student's function or class, compares it with a
trusted reference (scikit-learn, SciPy, closed forms, statistics) on inputs
it generates from ``seed``, prints one line when it passes, and raises
:class:`CheckFailed` (an ``AssertionError``) saying what was expected, what
came back and the likely cause when it does not. No reference solution to a
graded function lives here.
"""
from .common import CheckFailed

__all__ = ["CheckFailed"]
