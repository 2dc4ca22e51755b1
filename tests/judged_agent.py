"""A stand-in for a student's kernel in the checker tests: serves the judge on each socket path read from stdin.

The tests ship an implementation here (``judged(fn)`` in conftest.py) and run a check on the Remote handle
that comes back, as grading does with a sandboxed kernel.
"""
import sys

from helpers.bridge import serve

namespace: dict = {}
for line in sys.stdin:
    serve(line.strip(), namespace)
