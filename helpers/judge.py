"""The verdict of one test cell, computed in the trusted grading process.

A test cell (``checks.check_pca(pca)`` plus its hidden tests) never runs in
the student's kernel. :func:`judge_cell` runs its code here, with ``checks``
bound to the real checker module imported here, and every other name the
cell uses looked up in the kernel and handed over as plain data or as a
:class:`helpers.bridge.Remote`. The checker calls the student's code through
the bridge and decides here, with references the kernel never sees. So the
verdict depends on the kernel only through the data it returns: nothing the
kernel prints, patches or displays can make a check pass.

A cell passes when its code ran to the end (every check in it printed its ✔
line here); it fails with the checker's message, with what the student's code
raised, or with why the kernel could not be asked (time limit, stopped,
malformed answers — the last is reported for a look).
"""
from __future__ import annotations

import builtins
import importlib
import re
import threading
from dataclasses import dataclass, field

from . import bridge

CHECKS_MODULE = re.compile(r"helpers\.checks\.a\d\d")
_local = threading.local()


@dataclass
class Verdict:
    passed: bool
    kind: str  # "passed", "failed", "timeout", "stopped", "protocol" (malformed answers) or "not-run"
    message: str = ""  # why it failed, for the student and the instructor
    lines: list[str] = field(default_factory=list)  # the ✔ lines of the checks that passed


def report(line: str) -> bool:
    """Keep a check's ✔ line for the verdict; False outside a judged cell (the caller prints it)."""
    lines = getattr(_local, "lines", None)
    if lines is None:
        return False
    lines.append(line)
    return True


class _KernelNames(dict):
    """The test cell's namespace: builtins here, every other free name fetched from the kernel once."""

    def __init__(self, connection: bridge.Connection, trusted: dict):
        super().__init__()
        self.connection, self.trusted = connection, trusted

    def __missing__(self, name):
        if name in self.trusted or hasattr(builtins, name):
            raise KeyError(name)  # Python goes on to the globals and the builtins
        reply, buffers = self.connection.request("global", name=name)
        value = bridge.decode(reply["value"], buffers, self.connection)
        self[name] = value
        return value


def checks_module(name: str):
    if not CHECKS_MODULE.fullmatch(name or ""):
        raise ValueError(f"not a checker module: {name!r}")
    return importlib.import_module(name)


def judge_cell(source: str, listener: bridge.Listener, checks: str, deadline: float) -> Verdict:
    """Run a test cell's code here against the kernel that connects to ``listener``, until ``deadline``."""
    from .checks.common import CheckFailed

    _local.lines = lines = []
    try:
        connection = listener.accept(deadline)
        trusted = {"__builtins__": builtins, "__name__": "__test_cell__", "checks": checks_module(checks)}
        try:
            exec(compile(source, "<test cell>", "exec"), trusted, _KernelNames(connection, trusted))
        finally:
            connection.close()
    except CheckFailed as failure:
        return Verdict(False, "failed", str(failure), lines)
    except bridge.BridgeBroken as broken:
        kind = {"timeout": "timeout", "closed": "stopped"}.get(broken.kind, "protocol")
        return Verdict(False, kind, str(broken), lines)
    except NameError as error:
        return Verdict(False, "failed", f"{error}: run the cell that defines it (and keep its name).", lines)
    except Exception as error:  # a check met data it could not judge: the answer is wrong, said as plainly as we can
        return Verdict(False, "failed", f"the check could not use what your code returned ({type(error).__name__}: "
                                        f"{str(error)[:bridge.MAX_TEXT]})", lines)
    finally:
        _local.lines = None
        listener.close()
    return Verdict(True, "passed", "", lines)
