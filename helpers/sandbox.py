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
process it starts dies with it.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from jupyter_client import AsyncKernelManager

INSTALL_HELP = """Grading runs each submission's code in a sandbox made with bubblewrap (Linux).
  Debian/Ubuntu: sudo apt-get install bubblewrap
  Fedora: sudo dnf install bubblewrap      Arch: sudo pacman -S bubblewrap
bubblewrap needs unprivileged user namespaces (most Linux distributions allow them; inside a container, run
the container with them allowed). macOS and Windows have no such sandbox: grade on Linux, or on a Dask
cluster of Linux workers (--scheduler). Grading without isolation lets a submission read the solutions and
change other students' files; only if you trust every submission, pass --no-sandbox (the report says so)."""

# System folders the kernel may read; missing ones are skipped (they differ between distributions).
SYSTEM_FOLDERS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc", "/opt/conda")


class SandboxUnavailable(RuntimeError):
    """No working sandbox on this machine; the message says what to install."""


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """Why no sandbox can be made here (None when bubblewrap works)."""
    if not sys.platform.startswith("linux"):
        return f"this is {sys.platform}, not Linux.\n{INSTALL_HELP}"
    if shutil.which("bwrap") is None:
        return f"bubblewrap (bwrap) is not installed.\n{INSTALL_HELP}"
    try:
        probe = subprocess.run([*bwrap_args(Path("/tmp"), []), "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bubblewrap could not start ({error}).\n{INSTALL_HELP}"
    if probe.returncode != 0:
        return f"bubblewrap could not make a sandbox here ({probe.stderr.strip()[:300]}).\n{INSTALL_HELP}"
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


def bwrap_args(scratch: Path, readable: list[Path]) -> list[str]:
    """The bubblewrap command line (without the command to run) for one sandbox rooted at ``scratch``."""
    args = ["bwrap", "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534", "--cap-drop", "ALL",
            "--die-with-parent", "--new-session", "--unsetenv", "JPY_PARENT_PID", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
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
    """

    def __init__(self, scratch: Path, readable: list[Path], **kwargs):
        super().__init__(transport="ipc", **kwargs)
        self.scratch = scratch
        self.readable = readable
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
        return [*bwrap_args(self.scratch, self.readable), *command]


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
