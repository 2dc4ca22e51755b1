"""The student's entry point, on Windows, macOS and Linux alike. Run it with Python 3.10 to 3.13:

    python course.py setup             create .venv and install the packages (a few minutes, once)
    python course.py lab               open JupyterLab on the assignments (sets up first if needed)
    python course.py handin NOTEBOOK   check a notebook, prove it runs, write NOTEBOOK-handin.zip (.ipynb + PDF)
                                       (--rerun full: re-run it all in your budget and hand in that run)
    python course.py fetch             download the data sets ahead of time (e.g. before going offline)

Environment: COURSE_VENV (default .venv), COURSE_BUDGET (full or grade), COURSE_DATA_DIR (default data/).
The standard library only: this runs before any package is installed. ``./course`` (bash) calls this file.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OLDEST, NEWEST = (3, 10), (3, 13)  # what the course's packages (PyTorch first) publish wheels for
STAMP = ".course-installed"  # the venv and the requirements it was installed from: install again when either changes


def check_python(version=sys.version_info) -> None:
    if not OLDEST <= tuple(version[:2]) <= NEWEST:
        raise SystemExit(f"course: Python {version[0]}.{version[1]} cannot install the course's packages; use Python "
                         f"{OLDEST[0]}.{OLDEST[1]} to {NEWEST[0]}.{NEWEST[1]}, e.g. `py -3.12 course.py setup` on "
                         "Windows or `python3.12 course.py setup` elsewhere.")


def scripts(venv: Path, windows: bool = os.name == "nt") -> Path:
    """Where a venv keeps its programs: ``Scripts\\`` on Windows, ``bin/`` elsewhere."""
    return venv / ("Scripts" if windows else "bin")


def venv_python(venv: Path, windows: bool = os.name == "nt") -> Path:
    return scripts(venv, windows) / ("python.exe" if windows else "python")


def environment(venv: Path, base: dict, windows: bool = os.name == "nt") -> dict:
    """The notebooks' environment: the venv's programs first, ``helpers`` importable from this folder, and
    jupyter-config/, which keeps nbgrader's instructor tools off should the environment have nbgrader."""
    separator = ";" if windows else ":"

    def first(name: str, value: str) -> str:
        return value + (separator + base[name] if base.get(name) else "")

    return dict(base, PATH=first("PATH", str(scripts(venv, windows))), PYTHONPATH=first("PYTHONPATH", str(HERE)),
                JUPYTER_CONFIG_PATH=first("JUPYTER_CONFIG_PATH", str(HERE / "jupyter-config")))


def installed_for(venv: Path) -> str:
    digest = hashlib.sha256((HERE / "requirements.txt").read_bytes()).hexdigest()
    return f"{venv.resolve()} {digest}"


def setup(venv: Path) -> Path:
    """The venv with the course's packages, made or brought up to date; returns its Python."""
    python = venv_python(venv)
    if not python.exists():
        check_python()
        print(f"course: creating the environment in {venv}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    stamp = HERE / STAMP
    want = installed_for(venv)
    if not stamp.exists() or stamp.read_text().strip() != want:
        print("course: installing packages (a few minutes the first time)", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "-r", str(HERE / "requirements.txt")], check=True)
        # Fail here, clearly, if the install did not work.
        subprocess.run([str(python), "-c", "import torch, torchvision, jupyterlab, pypandoc, typst"], check=True)
        stamp.write_text(want + "\n")
    return python


COMMANDS = {"lab": ["-m", "jupyterlab", "notebooks"], "handin": ["-m", "helpers.handin"], "fetch": ["-m", "helpers.data", "fetch"]}


def main(argv: list[str]) -> int:
    command, arguments = (argv[0], argv[1:]) if argv else ("help", [])
    if command not in ("setup", *COMMANDS):
        print(__doc__.split("\n\n")[1])
        return 0 if command in ("help", "-h", "--help") else 2
    venv = HERE / os.environ.get("COURSE_VENV", ".venv")  # a relative COURSE_VENV is relative to this folder
    try:
        python = setup(venv)
    except subprocess.CalledProcessError as error:
        print(f"course: setup failed ({' '.join(map(str, error.cmd))} exited with {error.returncode}); see the lines above.",
              file=sys.stderr)
        return 1
    if command == "setup":
        return 0
    # A child process, not exec: Windows has no exec, and Ctrl+C then reaches JupyterLab, not this script.
    # The hand-in runs where the student is, so that a notebook's path can be given from there.
    try:
        return subprocess.run([str(python), *COMMANDS[command], *arguments], cwd=None if command == "handin" else HERE,
                              env=environment(venv, dict(os.environ))).returncode
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
