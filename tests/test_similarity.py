"""The similarity report ranks copied answers above honest ones, ignores the release's own code, and escapes
what students wrote; on a synthetic class with known copies."""
import csv

import nbformat
import pytest

from helpers import similarity

ASSIGNMENT = "a1"
STUBS = {
    "standardize": 'def standardize(X):\n    """Column-wise z-score of X [n, d]."""\n    # YOUR CODE HERE\n    raise NotImplementedError()',
    "pairwise": 'def pairwise_sq_dists(X, C):\n    """Squared distances [n, k] between rows of X and C."""\n'
                '    # YOUR CODE HERE\n    raise NotImplementedError()',
    "assign": 'def kmeans_step(X, C):\n    """Labels [n] and new centroids [k, d]."""\n    # YOUR CODE HERE\n    raise NotImplementedError()',
}
GIVEN = "import torch\nfrom helpers.checks import a01 as checks\nX = torch.randn(100, 4, generator=torch.Generator().manual_seed(0))"

ORIGINAL = {  # what the copiers took
    "standardize": "def standardize(X):\n    mu = X.mean(dim=0, keepdim=True)\n    sigma = X.std(dim=0, correction=0, keepdim=True)\n"
                   "    # guard against constant columns\n    sigma = torch.where(sigma > 0, sigma, torch.ones_like(sigma))\n"
                   "    return (X - mu) / sigma",
    "pairwise": "def pairwise_sq_dists(X, C):\n    x2 = (X ** 2).sum(1)[:, None]\n    c2 = (C ** 2).sum(1)[None, :]\n"
                "    cross = X @ C.T\n    return torch.clamp(x2 - 2 * cross + c2, min=0.0)",
    "assign": "def kmeans_step(X, C):\n    labels = pairwise_sq_dists(X, C).argmin(dim=1)\n    new = []\n"
              "    for j in range(C.shape[0]):\n        members = X[labels == j]\n"
              "        new.append(members.mean(0) if len(members) else C[j])\n    return labels, torch.stack(new)",
}
HONEST = [  # independent correct alternatives
    {"standardize": "def standardize(X):\n    return (X - X.mean(0)) / X.std(0, unbiased=False)",
     "pairwise": "def pairwise_sq_dists(X, C):\n    return torch.cdist(X, C) ** 2",
     "assign": "def kmeans_step(X, C):\n    d = pairwise_sq_dists(X, C)\n    lab = torch.argmin(d, 1)\n"
               "    onehot = torch.nn.functional.one_hot(lab, C.shape[0]).float()\n    counts = onehot.sum(0).clamp(min=1)\n"
               "    return lab, (onehot.T @ X) / counts[:, None]"},
    {"standardize": "def standardize(X):\n    n = X.shape[0]\n    m = X.sum(0) / n\n    v = ((X - m) ** 2).sum(0) / n\n"
                    "    return (X - m) / torch.sqrt(v)",
     "pairwise": "def pairwise_sq_dists(X, C):\n    out = torch.empty(X.shape[0], C.shape[0])\n"
                 "    for j in range(C.shape[0]):\n        out[:, j] = ((X - C[j]) ** 2).sum(-1)\n    return out",
     "assign": "def kmeans_step(X, C):\n    labels = pairwise_sq_dists(X, C).min(1).indices\n"
               "    sums = torch.zeros_like(C).index_add_(0, labels, X)\n"
               "    counts = torch.bincount(labels, minlength=len(C)).unsqueeze(1)\n"
               "    return labels, torch.where(counts > 0, sums / counts.clamp(min=1), C)"},
    {"standardize": "def standardize(X):\n    mean, var = X.mean(axis=0), X.var(axis=0, correction=0)\n    return (X - mean) * var.rsqrt()",
     "pairwise": "def pairwise_sq_dists(X, C):\n    return (X * X).sum(-1, keepdim=True) - 2 * X @ C.T + (C * C).sum(-1)",
     "assign": "def kmeans_step(X, C):\n    k = C.shape[0]\n    lbl = pairwise_sq_dists(X, C).argmin(-1)\n"
               "    cents = torch.stack([X[lbl == i].mean(0) if (lbl == i).any() else C[i] for i in range(k)])\n"
               "    return lbl, cents"},
    {"standardize": "def standardize(X):\n    Z = X.clone()\n    for col in range(X.shape[1]):\n"
                    "        c = X[:, col]\n        Z[:, col] = (c - c.mean()) / c.std(correction=0)\n    return Z",
     "pairwise": "def pairwise_sq_dists(X, C):\n    diff = torch.einsum('nd,nd->n', X, X)[:, None] + torch.einsum('kd,kd->k', C, C)\n"
                 "    return diff - 2 * torch.einsum('nd,kd->nk', X, C)",
     "assign": "def kmeans_step(X, C):\n    assignment = torch.min(pairwise_sq_dists(X, C), dim=1)[1]\n    centroids = C.clone()\n"
               "    for cluster in assignment.unique():\n        centroids[cluster] = X[assignment == cluster].mean(dim=0)\n"
               "    return assignment, centroids"},
]


def renamed_and_reordered(answers):
    """Every name changed, the functions' order and the cells' order swapped, the same code."""
    swap = {"mu": "avg", "sigma": "spread", "x2": "a", "c2": "b", "cross": "ab", "labels": "idx", "new": "cents",
            "members": "pts"}
    out = {}
    for grade_id, source in answers.items():
        for old, new in swap.items():
            source = source.replace(old, new)
        out[grade_id] = source
    return out, ["assign", "pairwise", "standardize"]


def new_comments_and_a_helper(answers):
    out = {g: s.replace("# guard against constant columns", "# avoid dividing by zero on flat features")
           for g, s in answers.items()}
    out["pairwise"] = ("def _norms(M):\n    # my helper: squared row norms\n    return (M ** 2).sum(1)\n\n\n"
                       + out["pairwise"].replace("x2 = (X ** 2).sum(1)[:, None]", "x2 = (X ** 2).sum(1)[:, None]  # rows of X"))
    return out, list(STUBS)


def cell(source, grade_id=None, solution=False, code=True):
    metadata = {"nbgrader": {"grade_id": grade_id, "solution": solution, "grade": False, "locked": not solution,
                             "schema_version": 3}} if grade_id else {}
    make = nbformat.v4.new_code_cell if code else nbformat.v4.new_markdown_cell
    return make(source, metadata=metadata)


def release():
    cells = [cell("# Assignment 1", "title", code=False), cell(GIVEN, "setup")]
    for grade_id, stub in STUBS.items():
        cells += [cell(stub, grade_id, solution=True), cell(f"checks.{grade_id}({grade_id})", f"test_{grade_id}")]
    return nbformat.v4.new_notebook(cells=cells)


def submission(answers, order=None, extra=()):
    nb = release()
    for c in nb.cells:
        grade_id = c.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            c.source = answers[grade_id]
    if order:  # the student moved their answer cells around
        solutions = {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")}
        rest = [c for c in nb.cells if not c.metadata.get("nbgrader", {}).get("solution")]
        nb.cells = rest[:2] + [solutions[g] for g in order] + rest[2:]
    nb.cells += [cell(source) for source in extra]
    return nb


@pytest.fixture(scope="module")
def synthetic_class(tmp_path_factory):
    course = tmp_path_factory.mktemp("course")
    (course / "notebooks" / ASSIGNMENT).mkdir(parents=True)
    nbformat.write(release(), course / "notebooks" / ASSIGNMENT / "a1.ipynb")
    renamed, order = renamed_and_reordered(ORIGINAL)
    commented, _ = new_comments_and_a_helper(HONEST[1] | {"standardize": ORIGINAL["standardize"]})
    class_ = {"orig-1": submission(ORIGINAL), "copy-1": submission(renamed, order),
              "orig-2": submission(HONEST[1] | {"standardize": ORIGINAL["standardize"]}),
              "copy-2": submission(commented, extra=["print(standardize(X)[:3])"]),
              "honest-a": submission(HONEST[0]), "honest-b": submission(HONEST[2]), "honest-c": submission(HONEST[3]),
              "like-release": release(), "also-like-release": release(),
              "<img src=x onerror=alert(1)>": submission({"assign": HONEST[0]["assign"], "standardize": "def standardize(X):\n    s = '</pre><script>alert(1)</script>'\n"
                                                         "    return (X - X.mean(0)) / X.std(0, unbiased=False)"})}
    for student, nb in class_.items():
        folder = course / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / "a1.ipynb")
    broken = course / "submitted" / "broken" / ASSIGNMENT
    broken.mkdir(parents=True)
    (broken / "a1.ipynb").write_text("{ not json")
    assert similarity.main([ASSIGNMENT], course=course) == 0
    with open(course / "reports" / f"similarity-{ASSIGNMENT}.csv") as handle:
        rows = list(csv.DictReader(handle))
    return course, rows


def ranked(rows):
    return [frozenset((r["student_a"], r["student_b"])) for r in rows]


def test_both_copied_pairs_rank_above_every_honest_pair(synthetic_class):
    _, rows = synthetic_class
    pairs = ranked(rows)
    copies = {frozenset(("orig-1", "copy-1")), frozenset(("orig-2", "copy-2"))}
    assert set(pairs[:2]) == copies, rows[:4]
    assert float(rows[1]["score"]) > float(rows[2]["score"])


def test_code_equal_to_the_release_ranks_nowhere(synthetic_class):
    _, rows = synthetic_class
    named = {name for r in rows for name in (r["student_a"], r["student_b"])}
    assert not named & {"like-release", "also-like-release"}


def test_unreadable_notebooks_are_named_and_skipped(synthetic_class, capsys):
    course, _ = synthetic_class
    page = (course / "reports" / f"similarity-{ASSIGNMENT}.html").read_text()
    assert "broken: a1.ipynb is not a readable notebook" in page


def test_the_page_escapes_student_code_and_loads_nothing(synthetic_class):
    course, rows = synthetic_class
    page = (course / "reports" / f"similarity-{ASSIGNMENT}.html").read_text()
    assert "<script" not in page and "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;script&gt;" in page  # the pair is listed, escaped
    assert "http://" not in page and "https://" not in page and "default-src 'none'" in page
    assert "<mark>" in page


def test_an_earlier_terms_copy_is_found(synthetic_class, tmp_path):
    course, _ = synthetic_class
    old = tmp_path / "2024" / "submitted" / "former" / ASSIGNMENT
    old.mkdir(parents=True)
    nbformat.write(submission(HONEST[3]), old / "a1.ipynb")
    documents, boilerplate, _ = similarity.load_documents(course, ASSIGNMENT, tmp_path)
    pairs = similarity.compare(documents, boilerplate)
    found = {frozenset((p.a, p.b)): p.score for p in pairs}
    assert found[frozenset(("honest-c", "archive: 2024/submitted/former"))] == 1.0
    assert not any(p.a.startswith("archive") and p.b.startswith("archive") for p in pairs)
