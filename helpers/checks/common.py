"""What every checker needs: calling student code safely, comparing, failing clearly."""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import torch


class CheckFailed(AssertionError):
    """A check did not pass; the message says what was expected, what came back and why."""


def fail(message: str):
    raise CheckFailed(message)


def expect(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


def passed(message: str) -> None:
    print(f"✔ {message}")


@contextlib.contextmanager
def silenced():
    """Run student code quietly: warnings and progress bars off stderr (nbgrader zeroes a test cell that
    writes there), and its training printout off the check's own report."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def call(fn, *args, what: str | None = None, **kwargs):
    """Call the student's ``fn``; turn 'not implemented yet' and crashes into a clear failure."""
    what = what or f"{getattr(fn, '__name__', 'your function')}(...)"
    try:
        with silenced():
            return fn(*args, **kwargs)
    except NotImplementedError:
        fail(f"{what} is not implemented yet: replace `raise NotImplementedError()` with your code.")
    except CheckFailed:
        raise
    except Exception as error:
        raise CheckFailed(f"{what} raised {type(error).__name__}: {error}") from error


def as_tensor(value, what: str) -> torch.Tensor:
    """A tensor from a tensor or NumPy array (checks accept both), detached and on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    fail(f"{what} should be a torch.Tensor, got {type(value).__name__}.")


def as_float(value, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        fail(f"{what} should be a number (a Python float), got {type(value).__name__}.")


def expect_shape(tensor: torch.Tensor, shape: tuple, what: str) -> None:
    expect(tuple(tensor.shape) == tuple(shape), f"{what} has shape {tuple(tensor.shape)}, expected {tuple(shape)}.")


def max_abs_diff(a, b) -> float:
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).abs().max()) if a.numel() else 0.0


def fmt(values, digits: int = 4) -> str:
    """A short, readable rendering of a vector of numbers for failure messages."""
    array = np.asarray(torch.as_tensor(values, dtype=torch.float64)).ravel()
    shown = ", ".join(f"{v:.{digits}g}" for v in array[:6])
    return f"[{shown}{', …' if array.size > 6 else ''}]"


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def non_contiguous(x: torch.Tensor) -> torch.Tensor:
    """The same values as ``x`` in a non-contiguous (column-major) layout, as a transpose or a slice gives them.

    Code that calls ``.view`` on its input, or assumes row-major memory, fails on it.
    """
    if x.dim() < 2:
        return torch.stack([x, x], 1)[:, 0]
    return x.transpose(0, -1).contiguous().transpose(0, -1)


def call_unchanged(fn, *args, what: str, **kwargs):
    """``call`` that also fails when ``fn`` modified one of its tensor arguments in place (``X -= mean``, or
    updating ``centroids = init`` row by row): the notebook reuses its data after the call."""
    given = {**{f"argument number {i + 1}": a for i, a in enumerate(args)}, **{f"argument `{k}`": v for k, v in kwargs.items()}}
    copies = {name: a.clone() for name, a in given.items() if isinstance(a, torch.Tensor)}
    result = call(fn, *args, what=what, **kwargs)
    for name, copy in copies.items():
        if not torch.equal(given[name], copy):
            fail(f"{what} changed its {name} in place (e.g. `X -= X.mean(0)`, or `centroids = init` then "
                 "`centroids[j] = ...`): the caller's data are corrupted. Work on a new tensor (X = X - X.mean(0)) or "
                 "a copy (init.clone()).")
    return result
