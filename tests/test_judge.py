"""A notebook's test cells judged by the driver: verdicts, the outputs written from them, and what the kernel sees.

Run without the sandbox (tests/test_sandbox.py and tests/test_adversarial.py cover it), so that these are quick.
"""
import json

import nbformat

from helpers.execution import Job, run_job

TEST = {"nbgrader": {"grade": True, "solution": False, "points": 1}}


def notebook(*cells):
    nb = nbformat.v4.new_notebook()
    for source, grade_id in cells:
        meta = json.loads(json.dumps(TEST)) if grade_id else {}
        if grade_id:
            meta["nbgrader"]["grade_id"] = grade_id
        nb.cells.append(nbformat.v4.new_code_cell(source, metadata=meta))
    return nbformat.writes(nb)


def test_verdicts_become_the_test_cells_outputs_and_the_kernel_never_sees_a_test():
    source = notebook(
        ("from helpers.checks import a01 as checks", None),
        ("def standardize(X):\n    return (X - X.mean(0)) / X.std(0, correction=0)", None),
        ("checks.check_standardize(standardize)\n### BEGIN HIDDEN TESTS\nchecks.check_standardize(standardize, seed=11)\n"
         "### END HIDDEN TESTS", "good"),
        ("checks.check_pca(standardize)", "bad"),
        ("seen = [s for s in In if 'seed=' + '11' in s or 'check' + '_pca' in s]\nprint('seen', seen)", None),
    )
    result = run_job(Job("judge", source, checks="helpers.checks.a01", sandbox=False, cell_timeout=60))
    assert result.verdicts["good"]["passed"] and len(result.verdicts["good"]["lines"]) == 2
    assert not result.verdicts["bad"]["passed"] and result.verdicts["bad"]["kind"] == "failed"
    cells = nbformat.reads(result.notebook, as_version=4).cells
    assert [c.source for c in cells] == [c.source for c in nbformat.reads(source, as_version=4).cells]
    good, bad, probe = cells[2], cells[3], cells[4]
    assert [o.output_type for o in good.outputs] == ["stream"] and good.outputs[0].text.count("✔") == 2
    assert bad.outputs[-1].ename == "CheckFailed" and bad.outputs[-1].evalue == result.verdicts["bad"]["message"]
    assert "seen []" in probe.outputs[0].text  # neither the test cells nor their hidden tests reached the kernel


def test_a_kernel_that_stops_answering_fails_the_test_and_the_rest_is_not_run():
    source = notebook(
        ("from helpers.checks import a01 as checks", None),
        ("import os\ndef standardize(X):\n    os._exit(3)", None),
        ("checks.check_standardize(standardize)", "first"),
        ("checks.check_standardize(standardize)", "second"),
    )
    result = run_job(Job("stop", source, checks="helpers.checks.a01", sandbox=False, cell_timeout=60))
    assert result.verdicts["first"]["kind"] == "stopped" and result.verdicts["second"]["kind"] == "not-run"
    assert [e["kind"] for e in result.events] == ["stopped"]  # a crash is not tampering
