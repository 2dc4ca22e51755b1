"""Google Colab, simulated: the edition published at a URL, a solved 01 opened "in Colab" from it.

Colab is stood in for by a ``google.colab`` package that every Python process of the run imports at start
(as Colab's kernel does): ``_message.blocking_request("get_ipynb")`` answers with the notebook "in the
browser" (a file outside the kernel's working folder), ``files.download`` records what it was offered.
The kernel's Python is a fresh venv without ``helpers``; it sees the course venv's packages (PyTorch and
the rest, as Colab has them) but not its ``helpers``. pip may not reach an index (PIP_NO_INDEX), so
``helpers`` can only come from the edition's ``file://`` URL that the setup cell reads from the notebook.
"""
import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import types
import zipfile
from pathlib import Path

import nbformat
import pytest

from helpers import course, data, edition, handin

ROOT = Path(__file__).resolve().parents[1]
NAME = "01_pca_autoencoders"

STANDIN = {
    "google/colab/__init__.py": "from . import _message, files\n",
    "google/colab/_message.py": '''\
        import json, os

        def blocking_request(request_type, request="", timeout_sec=5, parent=None):
            assert request_type == "get_ipynb", request_type
            with open(os.environ["COLAB_BROWSER_NOTEBOOK"], encoding="utf-8") as handle:
                return {"ipynb": json.load(handle)}
        ''',
    "google/colab/files.py": '''\
        import os

        def download(filename):
            with open(os.environ["COLAB_DOWNLOADS"], "a", encoding="utf-8") as record:
                record.write(os.path.abspath(filename) + "\\n")
        ''',
    "sitecustomize.py": "import google.colab  # Colab's kernel has it loaded from the start\n",
}

RUN = '''\
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
               resources={"metadata": {"path": sys.argv[2]}}).execute()
nbformat.write(nb, sys.argv[3])
'''


def outputs(cell) -> str:
    return "".join(o.get("text", "") + (f"{o['ename']}: {o['evalue']}" if o.get("output_type") == "error" else "")
                   for o in cell.get("outputs", []))


@pytest.fixture(scope="module")
def colab_run(tmp_path_factory):
    """The solved 01 run in the simulated Colab; returns (executed notebook, the run's folders)."""
    home = tmp_path_factory.mktemp("colab")
    zip_path = home / "dist" / f"{edition.NAME}-student.zip"
    built = edition.build(home / "dist", public_url=zip_path.as_uri())
    for relative, text in STANDIN.items():
        (home / "standin" / relative).parent.mkdir(parents=True, exist_ok=True)
        (home / "standin" / relative).write_text(textwrap.dedent(text))

    venv = home / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # The course venv's packages on the path, without processing its .pth files: its editable helpers stay out.
    (site / "course-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    # The browser's notebook: the edition's 01 (with the URL in its metadata), solved, and a line saying
    # where helpers came from.
    notebook = f"notebooks/{NAME}/{NAME}.ipynb"
    solved = course._solved_release(ROOT / "solutions" / NAME / f"{NAME}.ipynb", built / notebook)
    solved.cells.insert(2, nbformat.v4.new_code_cell("print('helpers from', helpers.__file__)"))
    browser = home / "browser" / f"{NAME}.ipynb"
    browser.parent.mkdir()
    nbformat.write(solved, browser)
    content = home / "content"  # Colab's working folder: the notebook is not there
    content.mkdir()

    env = {**os.environ, "PYTHONPATH": str(home / "standin"), "COURSE_BUDGET": "grade", "OMP_NUM_THREADS": "1",
           "COURSE_DATA_DIR": str(data.data_dir()), "COLAB_BROWSER_NOTEBOOK": str(browser),
           "COLAB_DOWNLOADS": str(home / "downloads.txt"), "PIP_NO_INDEX": "1", "PIP_NO_CACHE_DIR": "1",
           "PIP_NO_BUILD_ISOLATION": "0",  # pip's spelling of --no-build-isolation: setuptools from the venv
           "JUPYTER_PATH": str(Path(sys.prefix) / "share" / "jupyter")}  # nbconvert's templates, as its install has
    for name in ("COURSE_HANDIN_RUN", "NBGRADER_EXECUTION", "COURSE_DEVICE"):
        env.pop(name, None)
    executed = home / "executed.ipynb"
    run = subprocess.run([venv / "bin" / "python", "-c", RUN, str(browser), str(content), str(executed)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    return nbformat.read(executed, as_version=4), home, site


def test_setup_cell_installs_helpers_from_the_url_and_01_runs_in_the_grade_budget(colab_run):
    nb, home, site = colab_run
    errors = [outputs(c) for c in nb.cells if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert not errors, errors
    setup = outputs(nb.cells[1])
    assert "budget 'grade'" in setup and "Google Colab" in setup and "data: MNIST verified" in setup
    assert f"helpers from {site / 'helpers' / '__init__.py'}" in outputs(nb.cells[2])
    assert (site / "helpers" / "penguins.csv").is_file()  # 01's penguins came from the installed package
    direct = json.loads(next(site.glob("learning_without_labels-*.dist-info")).joinpath("direct_url.json").read_text())
    assert direct["url"] == (home / "dist" / f"{edition.NAME}-student.zip").as_uri()


def test_hand_in_takes_the_browsers_notebook_and_offers_the_archive(colab_run):
    nb, home, _ = colab_run
    archive = home / "content" / "hand-in" / f"{NAME}-handin.zip"
    assert (home / "downloads.txt").read_text().splitlines() == [str(archive)]
    shown = outputs(nb.cells[-1])
    assert "visible checks passed: 8/8" in shown and "downloads it" in shown
    with zipfile.ZipFile(archive) as bundle:
        assert nbformat.reads(bundle.read(f"{NAME}.ipynb"), as_version=4).cells[2].source.startswith("print('helpers from'")
        assert bundle.read(f"{NAME}.pdf").startswith(b"%PDF")


@pytest.mark.parametrize("url, pip_url, badge", [
    ("https://github.com/prof/ull-2027", "https://github.com/prof/ull-2027/archive/refs/heads/main.zip",
     "https://colab.research.google.com/github/prof/ull-2027/blob/main/notebooks/01_x/01_x.ipynb"),
    ("https://github.com/prof/ull.git/tree/fall-2027/", "https://github.com/prof/ull/archive/refs/heads/fall-2027.zip",
     "https://colab.research.google.com/github/prof/ull/blob/fall-2027/notebooks/01_x/01_x.ipynb"),
])
def test_a_github_address_gives_a_badge_per_notebook_and_the_branchs_archive(url, pip_url, badge):
    helpers_url, readme = edition.colab_links(url, ["notebooks/01_x/01_x.ipynb", "notebooks/02_y/02_y.ipynb"])
    assert helpers_url == pip_url
    assert readme.count(edition.BADGE) == 2 and f"]({badge})" in readme


def test_any_other_address_is_what_pip_installs_and_students_upload_the_notebook():
    helpers_url, readme = edition.colab_links("https://course.example/ull-student.zip", ["notebooks/01_x/01_x.ipynb"])
    assert helpers_url == "https://course.example/ull-student.zip"
    assert edition.BADGE not in readme and "Upload notebook" in readme


def test_without_a_public_url_the_readme_says_so_and_notebooks_name_no_address(tmp_path):
    built = edition.build(tmp_path)
    readme = (built / "README.md").read_text()
    assert edition.COLAB_MARK not in readme and "Not published for Colab" in readme
    assert all("course" not in nbformat.read(p, as_version=4).metadata for p in built.glob("notebooks/*/*.ipynb"))
    assert (built / "helpers" / "penguins.csv").read_bytes() == (ROOT / "data" / "penguins.csv").read_bytes()


def test_an_installed_helpers_keeps_data_in_the_home_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    assert data.data_dir() == (ROOT / "data").resolve()
    monkeypatch.setattr(data, "REPO_ROOT", tmp_path)  # site-packages: no course folder around helpers
    assert data.data_dir() == data.INSTALLED_DATA_DIR.expanduser().resolve()


def test_no_answer_from_the_browser_stops_the_hand_in_with_a_message(monkeypatch, tmp_path):
    colab, message = types.ModuleType("google.colab"), types.ModuleType("google.colab._message")
    message.blocking_request = lambda request_type, request="", timeout_sec=5, parent=None: None  # Colab's timeout
    colab._message = message
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab._message", message)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(handin.HandInError, match="did not send the notebook"):
        handin.hand_in(f"{NAME}.ipynb")
    assert not (tmp_path / "hand-in").exists()
