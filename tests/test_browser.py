"""Both sides in a real browser (headless Chromium): the student's JupyterLab and the instructor's formgrader.

The review pages of a hostile submission (formgrader's view and the feedback page) run none of its
scripts; the payloads are those of tests/test_review_pages.py.

``COURSE_SCREENSHOTS=docs`` saves the screenshots the README shows.
"""
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest
from classroom import ASSIGNMENT, NOTEBOOK, student_env, without_markers

from helpers import course, edition, grades_export

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(not (CHROMIUM and shutil.which("chromedriver")) and not os.environ.get("CI"),
                                reason="needs chromium and chromedriver (apt-get install chromium chromium-driver; CI does)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


@pytest.fixture
def shots(tmp_path):
    folder = Path(os.environ.get("COURSE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def jupyter(command, cwd, env, log):
    """Start a Jupyter server on 127.0.0.1 with a token; yield (base URL, token); stop it."""
    port, token = free_port(), secrets.token_hex(16)
    args = [*command, "--no-browser", "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={token}",
            "--ServerApp.port_retries=0", "--allow-root", "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    with open(log, "w") as out:
        server = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None and time.time() < deadline, Path(log).read_text()[-3000:]
                time.sleep(1)
        yield url, token
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the server and the kernels it started
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def wait_for(driver, condition, timeout=180):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.5).until(lambda d: condition(d))


def status(url) -> int:
    try:
        return urllib.request.urlopen(url, timeout=10).status
    except urllib.error.HTTPError as error:
        return error.code


def log_in(driver, url, token):
    """Formgrader's pages and their requests need the login cookie."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(f"{url}/login")
    driver.find_element(By.ID, "password_input").send_keys(token, Keys.ENTER)
    wait_for(driver, lambda d: "/login" not in d.current_url)


def manual_grade(course_dir):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gradebook:
        grade = gradebook.find_grade("written_pca", ASSIGNMENT, ASSIGNMENT, "alice")
        comment = gradebook.find_comment("written_pca", ASSIGNMENT, ASSIGNMENT, "alice")
        return grade.manual_score, comment.manual_comment


def test_student_runs_a_check_in_jupyterlab(browser, tmp_path, shots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    folder = edition.build(tmp_path / "dist")
    name = "01_pca_autoencoders"
    solved = without_markers(course._solved_release(ROOT / "solutions" / name / f"{name}.ipynb",
                                                    ROOT / "notebooks" / name / f"{name}.ipynb"))
    nbformat.write(solved, folder / "notebooks" / name / f"{name}.ipynb")
    with jupyter(["./course", "lab"], folder, student_env(), tmp_path / "lab.log") as (url, token):
        # The edition's JupyterLab has no instructor tools, even where nbgrader is installed.
        assert status(f"{url}/formgrader?token={token}") == 404
        page = urllib.request.urlopen(f"{url}/lab?token={token}").read().decode()
        config = json.loads(re.search(r'id="jupyter-config-data"[^>]*>(.*?)</script>', page, re.S).group(1))
        assert {"@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:create-assignment"} <= set(config["disabledExtensions"])

        browser.get(f"{url}/lab/tree/{name}/{name}.ipynb?token={token}")
        cells = wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")) > 6 and
                         d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"))
        cells[1].find_element(By.CSS_SELECTOR, ".jp-InputArea-editor").click()  # the setup cell
        for _ in range(6):  # setup, data, standardize, and its test cell (markdown cells in between)
            browser.switch_to.active_element.send_keys(Keys.SHIFT, Keys.ENTER)
            time.sleep(0.3)
        check = wait_for(browser, lambda d: next((o for o in d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
                                                  if "✔" in o.text), None))
        outputs = " ".join(o.text for o in browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output"))
        assert "budget 'grade'" in outputs
        for button in browser.find_elements(By.XPATH, "//button[normalize-space()='No']"):
            button.click()  # JupyterLab's "notified about news?" question
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", check)
        browser.save_screenshot(str(shots / "student-jupyterlab.png"))


def test_instructor_grades_a_written_answer_in_formgrader(browser, hub_course, tmp_path, shots):
    from nbgrader.api import Gradebook
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    course_dir = shutil.copytree(hub_course[0], tmp_path / "course")
    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gradebook:
        submission = gradebook.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, "alice").id
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    with jupyter([sys.executable, "-m", "jupyter", "lab"], course_dir, env, tmp_path / "lab.log") as (url, token):
        log_in(browser, url, token)
        browser.get(f"{url}/formgrader/gradebook/{ASSIGNMENT}/{ASSIGNMENT}")
        wait_for(browser, lambda d: d.find_elements(By.PARTIAL_LINK_TEXT, "Submission"))
        browser.get(f"{url}/formgrader/submissions/{submission}/?index=0")
        score = wait_for(browser, lambda d: d.find_element(By.ID, "written_pca"))
        assert "PC1 is overall size." in browser.page_source  # alice's written answer is on the page
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", score)
        score.clear()
        score.send_keys("1.5", Keys.TAB)  # formgrader saves a field when it loses focus
        browser.find_element(By.ID, "written_pca-comment").send_keys("Right: size. Which species does PC1 separate?", Keys.TAB)
        wait_for(browser, lambda d: manual_grade(course_dir) == (1.5, "Right: size. Which species does PC1 separate?"), timeout=60)
        browser.save_screenshot(str(shots / "instructor-formgrader.png"))
    grades = grades_export.export("csv", tmp_path / "grades.csv", course=course_dir)
    rows = grades.read_text().splitlines()
    assert rows[1] == "alice,3.5,2,1.5,,"  # total, autograded, manual; nothing left to grade by hand; no notes


# What on the page could still run a payload, and whether one did (each records itself in window.pwned).
LIVE_PAYLOADS = """
const live = [];
for (const element of document.querySelectorAll('*')) {
  for (const attribute of element.attributes) {
    const value = attribute.value.trim().toLowerCase();
    if ((attribute.name.startsWith('on') && value.includes('pwned')) || value.startsWith('javascript:'))
      live.push(element.tagName + ' ' + attribute.name);
  }
}
for (const element of document.querySelectorAll('script, style'))
  if (element.textContent.includes('pwned')) live.push(element.tagName);
for (const element of document.querySelectorAll('iframe, object, embed, form')) live.push(element.tagName);
return {live: live, ran: window.pwned || [], title: document.title};
"""


def settled(driver):
    """Wait until the page and its images have loaded and the error events of broken ones were dispatched."""
    wait_for(driver, lambda d: d.execute_script(
        "return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)"), timeout=60)
    # An image the test adds now fails after the page's own: once its handler ran, theirs had their turn.
    driver.execute_script("const probe = new Image(); probe.onerror = () => { window.probed = true }; probe.src = 'x:'")
    wait_for(driver, lambda d: d.execute_script("return window.probed === true"), timeout=60)


def assert_inert_and_complete(driver):
    from selenium.webdriver.common.by import By
    from test_review_pages import HEADING, MATHS

    for link in driver.find_elements(By.LINK_TEXT, "click me"):
        link.click()  # a javascript: link would run now
    settled(driver)
    state = driver.execute_script(LIVE_PAYLOADS)
    assert state["live"] == [] and state["ran"] == [] and "pwned" not in state["title"], state
    heading = driver.find_element(By.XPATH, f"//h2[contains(., '{HEADING}')]")
    assert heading.is_displayed()  # no student style hid the page
    figures = driver.find_elements(By.CSS_SELECTOR, "img[src^='data:image/png']")
    assert len(figures) >= 2 and all(driver.execute_script("return arguments[0].naturalWidth > 0", f) for f in figures)
    assert MATHS in driver.page_source or driver.find_elements(By.CSS_SELECTOR, ".MathJax")  # TeX, or typeset


def test_review_pages_of_a_hostile_submission_run_no_script(browser, hub_course, tmp_path):
    """alice's autograded notebook made hostile (written answer, outputs, test cell), then viewed by the
    instructor in formgrader and rendered to feedback by nbgrader as ./kit grade does."""
    from nbgrader.api import Gradebook
    from selenium.webdriver.common.by import By
    from test_review_pages import HIDDEN_LINE, make_hostile, png

    from helpers.grading import nbgrader_api

    course_dir = shutil.copytree(hub_course[0], tmp_path / "course")
    graded = course_dir / "autograded" / "alice" / ASSIGNMENT / NOTEBOOK
    nb = make_hostile(nbformat.read(graded, as_version=4), png(), "written_pca", "test_standardize", "standardize")
    nbformat.write(nb, graded)
    result = nbgrader_api(course_dir).generate_feedback(ASSIGNMENT, "alice")
    assert result["success"], result
    feedback = course_dir / "feedback" / "alice" / ASSIGNMENT / f"{ASSIGNMENT}.html"
    assert HIDDEN_LINE not in feedback.read_text() and "printed by the student" not in feedback.read_text()
    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gradebook:
        submission = gradebook.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, "alice").id
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    with jupyter([sys.executable, "-m", "jupyter", "lab"], course_dir, env, tmp_path / "lab.log") as (url, token):
        log_in(browser, url, token)
        browser.get(f"{url}/formgrader/submissions/{submission}/?index=0")
        wait_for(browser, lambda d: d.find_element(By.ID, "written_pca"))  # the written answer's score field
        assert_inert_and_complete(browser)
    browser.get(feedback.as_uri())
    assert_inert_and_complete(browser)
    assert "✔" in browser.page_source and "should have mean 0" in browser.page_source
