"""The checkers of assignment 02 pass the reference and other correct styles, and fail plausible wrong answers, in the
student's own kernel (local) and as grading runs them (judged: the answers live in a separate stand-in kernel, behind
Remote handles)."""
import numpy as np
import pytest
import torch
from sklearn.cluster import kmeans_plusplus
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture
from torch import nn

from conftest import fails, message
from helpers.checks import a02 as checks


# ------------------------------------------------------------ pairwise distances
def numpy_dists(X, C):
    X, C = np.asarray(X), np.asarray(C)
    return np.einsum("nd,nd->n", X, X)[:, None] - 2 * X @ C.T + np.einsum("kd,kd->k", C, C)


def loop_over_centroids(X, C):
    return torch.stack([((X - c) ** 2).sum(1) for c in C], dim=1)


@pytest.mark.parametrize("style", ["reference", "numpy", "loop over centroids", "cdist"])
def test_pairwise_correct_styles_pass(ref02, style, student):
    fn = student({"reference": ref02.pairwise_sq_dists, "numpy": numpy_dists, "loop over centroids": loop_over_centroids,
                  "cdist": lambda X, C: torch.cdist(X, C) ** 2}[style])
    for seed in range(3):
        checks.check_pairwise_sq_dists(fn, seed=seed)
    checks.check_pairwise_sq_dists(fn, seed=5, n=50, k=50, d=3)
    checks.check_pairwise_sq_dists_memory(fn)


def broadcast(X, C):
    return ((X[:, None, :] - C[None, :, :]) ** 2).sum(-1)


def numpy_broadcast(X, C):
    X, C = np.asarray(X), np.asarray(C)
    return ((X[:, None, :] - C[None]) ** 2).sum(-1)


@pytest.mark.parametrize("wrong, message", [
    (lambda X, C: torch.cdist(X, C), "not squared"),
    (lambda X, C: (X * X).sum(1, keepdim=True) - 2 * X @ C.T, "‖c‖² term is missing"),
    (lambda X, C: (X * X).sum(1, keepdim=True) + 2 * X @ C.T + (C * C).sum(1), "wrong sign"),
    (lambda X, C: (X * X).sum(1, keepdim=True) - X @ C.T + (C * C).sum(1), "−2 x·c"),
    (lambda X, C: broadcast(X, C).T, "transposed"),
    (lambda X, C: broadcast(X.float(), C.float()), "keep the dtype"),
])
def test_pairwise_wrong_fails(wrong, message, student):
    fails(checks.check_pairwise_sq_dists, student(wrong), match=message)


@pytest.mark.parametrize("wrong", [broadcast, numpy_broadcast,
                                   lambda X, C: torch.linalg.vector_norm(X.unsqueeze(1) - C, dim=2) ** 2])
def test_pairwise_broadcast_fails_memory(wrong, student):
    wrong = student(wrong)
    checks.check_pairwise_sq_dists(wrong)  # right values ...
    fails(checks.check_pairwise_sq_dists_memory, wrong, match=r"\[n, k, d\] tensor is 191 MiB")  # ... too much memory


def test_pairwise_memory_judges_the_values(student):
    fails(checks.check_pairwise_sq_dists_memory, student(lambda X, C: torch.zeros(len(X), len(C))), match="differs")


# ----------------------------------------------------------------- k-means++
def plus_plus_variant(weight=lambda d2: d2, last_only=False, farthest=False, uniform=False, use_generator=True):
    """A k-means++ initialisation with one deliberate deviation from D² sampling."""
    def init(X, k, generator=None):
        g = generator if use_generator else None
        first = torch.randint(len(X), (1,), generator=g)
        chosen, closest = [first], ((X - X[first]) ** 2).sum(1)
        for _ in range(1, k):
            if farthest:
                index = closest.argmax().reshape(1)
            else:
                index = torch.multinomial((closest > 0).double() if uniform else weight(closest), 1, generator=g)
            chosen.append(index)
            new = ((X - X[index]) ** 2).sum(1)
            closest = new if last_only else torch.minimum(closest, new)
        return X[torch.cat(chosen)].clone()
    return init


def sklearn_plus_plus(X, k, generator=None):
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    centres, _ = kmeans_plusplus(np.asarray(X), k, random_state=seed, n_local_trials=1)
    return torch.from_numpy(centres)


@pytest.mark.parametrize("style", ["reference", "loop", "sklearn non-greedy"])
def test_plus_plus_correct_styles_pass(ref02, style, student):
    fn = student({"reference": ref02.kmeans_plus_plus_init, "loop": plus_plus_variant(),
                  "sklearn non-greedy": sklearn_plus_plus}[style])
    for seed in (0, 1):
        checks.check_kmeans_plus_plus_init(fn, seed=seed)


def greedy_sklearn(X, k, generator=None):
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    return torch.from_numpy(kmeans_plusplus(np.asarray(X), k, random_state=seed)[0])


@pytest.mark.parametrize("wrong, message", [
    (plus_plus_variant(weight=torch.sqrt), "centroid 2 should be drawn"),
    (plus_plus_variant(weight=lambda d2: d2**1.5), "centroid 2 should be drawn"),
    (plus_plus_variant(last_only=True), "centroid 3 should be drawn"),
    (plus_plus_variant(farthest=True), "farthest point"),
    (plus_plus_variant(uniform=True), "sampling uniformly"),
    (greedy_sklearn, "should be drawn"),
    (plus_plus_variant(use_generator=False), "same seed"),
    (lambda X, k, generator=None: X[:k].clone(), "same seed|uniformly random row"),
    (lambda X, k, generator=None: X[torch.randperm(len(X), generator=generator)[:k]] + 1e-3, "rows of X"),
])
def test_plus_plus_wrong_fails(wrong, message, student):
    fails(checks.check_kmeans_plus_plus_init, student(wrong), match=message)


# -------------------------------------------------------------- class means
def class_sums(X, y, k):
    return torch.stack([X[y == j].sum(0) for j in range(k)])


def test_class_means_styles(ref02, student):
    checks.check_class_mean_centroids(student(ref02.class_mean_centroids))
    checks.check_class_mean_centroids(student(lambda X, y, k: torch.stack([X[y == j].mean(0) for j in range(k)])), seed=3)
    fails(checks.check_class_mean_centroids, student(class_sums), match="sums of each class")
    fails(checks.check_class_mean_centroids, student(lambda X, y, k: X.mean(0).repeat(k, 1)), match="mean of all of X")
    fails(checks.check_class_mean_centroids,  # assumes the labels are sorted
          student(lambda X, y, k: torch.stack([part.mean(0) for part in X.split(len(X) // k)][:k])),
          match="mean of X\\[y == j\\]")


# -------------------------------------------------------------------- k-means
def lloyd(X, k, init="random", max_iter=100, tol=1e-4, generator=None, empty="keep", inertia_after_update=False,
          use_tol=True, replacement=False, plus_plus="d2", use_generator=True, mean_inertia=False):
    """A plain-loop k-means; the keyword arguments switch in one deliberate deviation each."""
    g = generator if use_generator else None
    X = torch.as_tensor(X)
    if isinstance(init, str) and init == "random":
        rows = torch.randint(len(X), (k,), generator=g) if replacement else torch.randperm(len(X), generator=g)[:k]
        centroids = X[rows].clone()
    elif isinstance(init, str):
        centroids = (plus_plus_variant(use_generator=use_generator)(X, k, g) if plus_plus == "d2"
                     else X[torch.randperm(len(X), generator=g)[:k]].clone())
    else:
        centroids = torch.as_tensor(init, dtype=X.dtype).clone()
    history = []
    for _ in range(max_iter):
        labels = torch.cdist(X, centroids).argmin(1)
        new = centroids.clone()
        for j in range(k):
            members = X[labels == j]
            if len(members) or empty == "nan":
                new[j] = members.mean(0)
            elif empty == "reinit":
                new[j] = X[torch.randint(len(X), (1,), generator=g)]
        reference_centroids = new if inertia_after_update else centroids
        inertia = float(((X - reference_centroids[labels]) ** 2).sum())
        history.append(inertia / len(X) if mean_inertia else inertia)
        shift = float((new - centroids).norm(dim=1).max())
        centroids = new
        if use_tol and shift <= tol:
            break
    return centroids, labels, history


@pytest.mark.parametrize("style", ["reference", "plain loop", "inertia after the update"])
def test_kmeans_correct_styles_pass(ref02, style, student):
    fn = student({"reference": ref02.kmeans, "plain loop": lloyd,
                  "inertia after the update": lambda *a, **kw: lloyd(*a, inertia_after_update=True, **kw)}[style])
    for seed in (0, 1):
        checks.check_kmeans(fn, seed=seed)
    checks.check_kmeans(fn, seed=41, n=300, d=2, k=3)
    checks.check_kmeans_empty_cluster(fn)
    checks.check_kmeans_init_modes(fn)


def test_reference_kmeans_is_plain_lloyd(ref02):
    """The reference skips points by distance bounds and updates sums incrementally (for speed); it must still
    give the plain iteration's labels, centroids and inertias, over many iterations and more than one block."""
    g = torch.Generator().manual_seed(5)
    X = torch.cat([torch.randn(3000, 12, generator=g, dtype=torch.float64) + 1.5 * torch.randn(1, 12, generator=g)
                   for _ in range(4)])  # 12 000 points: three blocks of 4096
    init = X[torch.randperm(len(X), generator=g)[:7]].clone()
    fast, plain = ref02.kmeans(X, 7, init=init, max_iter=200, tol=0.0), lloyd(X, 7, init=init, max_iter=200, tol=0.0)
    assert len(fast[2]) == len(plain[2]) > 10
    assert torch.equal(fast[1], plain[1])
    assert torch.allclose(fast[0], plain[0], rtol=0, atol=1e-10)
    assert fast[2] == pytest.approx(plain[2], rel=1e-10)


def variant(**deviation):
    return lambda *args, **kwargs: lloyd(*args, **deviation, **kwargs)


def test_kmeans_wrong_fails(student):
    fails(checks.check_kmeans, student(variant(mean_inertia=True)), match="mean squared distance")
    fails(checks.check_kmeans, student(variant(use_tol=False)), match="tol=1e12")
    fails(checks.check_kmeans, student(lambda *a, **kw: lloyd(*a, **{**kw, "max_iter": 1})), match="converged after")

    def one_more_iteration(X, k, init="random", max_iter=100, **kw):
        return lloyd(X, k, init=init, max_iter=max_iter + 1, **kw)

    fails(checks.check_kmeans, student(one_more_iteration), match="exactly one iteration")

    def increasing_history(*args, **kwargs):
        centroids, labels, history = lloyd(*args, **kwargs)
        return centroids, labels, history[::-1]

    fails(checks.check_kmeans, student(increasing_history), match="increases")

    def sorted_labels(*args, **kwargs):  # relabels clusters but keeps the centroids: labels no longer match them
        centroids, labels, history = lloyd(*args, **kwargs)
        return centroids, (labels + 1) % len(centroids), history

    fails(checks.check_kmeans, student(sorted_labels), match="labels agree")

    def updates_init_in_place(X, k, init="random", max_iter=100, tol=1e-4, generator=None):
        centroids, labels, history = lloyd(X, k, init=init, max_iter=max_iter, tol=tol, generator=generator)
        if isinstance(init, torch.Tensor):
            init.copy_(centroids)  # as `centroids = init` followed by `centroids[j] = X[labels == j].mean(0)`
        return centroids, labels, history

    fails(checks.check_kmeans, student(updates_init_in_place), match="argument `init` in place")


def test_kmeans_empty_cluster_wrong_fails(student):
    fails(checks.check_kmeans_empty_cluster, student(variant(empty="nan")), match="NaN")
    fails(checks.check_kmeans_empty_cluster, student(variant(empty="reinit")), match="moved|labels are")


def test_kmeans_init_modes_wrong_fails(student):
    fails(checks.check_kmeans_init_modes, student(variant(replacement=True)), match="distinct")
    fails(checks.check_kmeans_init_modes, student(variant(use_generator=False)), match="same seed")
    fails(checks.check_kmeans_init_modes, student(variant(plus_plus="random")), match="D² sampling almost always")


# ------------------------------------------------------------------------ MLP
class ConvNet(nn.Module):
    def __init__(self, hidden=256):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 10)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


def wrong_mlps(ref02) -> dict:
    """Plausible mistakes in the MLP class, by the message they must get."""
    class PreActivation(ref02.MLP):
        def features(self, x):
            return self.body[:-1](x)

        def forward(self, x):
            return self.head(self.body(x))

    class FixedWidth(ref02.MLP):
        def __init__(self, hidden=256):
            super().__init__(hidden=256)

    class EarlierLayer(nn.Module):  # 784 -> hidden -> 64 -> 10, features from the first hidden layer
        def __init__(self, hidden=256):
            super().__init__()
            self.first = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU())
            self.rest = nn.Sequential(nn.Linear(hidden, 64), nn.ReLU(), nn.Linear(64, 10))

        def features(self, x):
            return self.first(x)

        def forward(self, x):
            return self.rest(self.first(x))

    class Detached(ref02.MLP):
        def forward(self, x):
            return super().forward(x).detach()

    class NotAModule:  # the layers of a module, without nn.Module
        def __init__(self, hidden=256):
            self.inner = ref02.MLP(hidden)

        def features(self, x):
            return self.inner.features(x)

        def __call__(self, x):
            return self.inner(x)

    return {"pre-activation": (PreActivation, "penultimate"), "earlier layer": (EarlierLayer, "penultimate"),
            "fixed width": (FixedWidth, r"\(200, 256\), expected \(200, 32\)"),
            "detached": (Detached, "is the output detached"), "not a module": (NotAModule, "subclass torch.nn.Module")}


def test_mlp_styles(ref02, student):
    checks.check_mlp(student(ref02.MLP))
    checks.check_mlp(student(ConvNet), seed=3)
    for wrong, expected in wrong_mlps(ref02).values():
        fails(checks.check_mlp, student(wrong), match=expected)


def test_accuracy(ref02, student):
    accuracy = student(ref02.accuracy)
    checks.check_accuracy(accuracy)
    checks.check_accuracy(accuracy, seed=5, n=130, batch_size=32)

    def percent(model, loader):
        return 100 * ref02.accuracy(model, loader)

    def batch_mean(model, loader):
        model.eval()
        with torch.no_grad():
            return float(np.mean([float((model(x).argmax(1) == t).float().mean()) for x, t in loader]))

    def train_mode(model, loader):
        with torch.no_grad():
            return float(torch.cat([model(x).argmax(1) == t for x, t in loader]).float().mean())

    fails(checks.check_accuracy, student(percent), match="percentage")
    fails(checks.check_accuracy, student(batch_mean), match="per-batch")
    fails(checks.check_accuracy, student(train_mode), match="evaluation mode")


def features_with_graph(model, loader):
    model.eval()
    return torch.cat([model.features(x) for x, _ in loader])


def test_extract_features(ref02, student):
    checks.check_extract_features(student(ref02.extract_features))

    def logits(model, loader):
        model.eval()
        with torch.no_grad():
            return torch.cat([model(x) for x, _ in loader])

    def train_mode(model, loader):
        with torch.no_grad():
            return torch.cat([model.features(x) for x, _ in loader])

    fails(checks.check_extract_features, student(logits), match="logits")
    fails(checks.check_extract_features, student(train_mode), match="evaluation mode")
    fails(checks.check_extract_features, student(features_with_graph), match="requires grad")


def no_step(model, loader, epochs=3, lr=1e-3):
    losses = []
    for _ in range(epochs):
        for x, t in loader:
            loss = nn.functional.cross_entropy(model(x), t)
            loss.backward()
        losses.append(float(loss))
    return {"train_loss": losses}


def test_train_classifier(ref02, student, monkeypatch):
    monkeypatch.setenv("COURSE_BUDGET", "grade")
    checks.check_train_classifier(student(ref02.train_classifier), student(ref02.MLP))

    def per_batch(model, loader, epochs=3, lr=1e-3):
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        losses = []
        for _ in range(epochs):
            for x, t in loader:
                loss = nn.functional.cross_entropy(model(x), t)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(float(loss))
        return {"train_loss": losses}

    fails(checks.check_train_classifier, student(no_step), student(ref02.MLP), match="test accuracy")
    fails(checks.check_train_classifier, student(per_batch), student(ref02.MLP), match="one entry per epoch")


# ------------------------------------------------------------------------ GMM
def unseeded_gmm(f, n, seed=0):
    return GaussianMixture(n, reg_covar=1e-3).fit(np.asarray(f))


def test_fit_gmm(ref02, student):
    fit_gmm = student(ref02.fit_gmm)
    checks.check_fit_gmm(fit_gmm)
    checks.check_fit_gmm(fit_gmm, seed=4, n=600, d=3, components=2)
    checks.check_fit_gmm(student(lambda f, n, seed=0: GaussianMixture(n, reg_covar=1e-3, n_init=2, random_state=seed)
                                 .fit(np.asarray(f, dtype=np.float64))))

    def seeding_numpy(f, n, seed=0):
        np.random.seed(seed)
        return GaussianMixture(n, reg_covar=1e-3).fit(np.asarray(f))

    checks.check_fit_gmm(student(seeding_numpy))
    fails(checks.check_fit_gmm, student(lambda f, n, seed=0: GaussianMixture(n, covariance_type="diag", random_state=seed)
                                        .fit(np.asarray(f))), match="'full'")
    fails(checks.check_fit_gmm, student(unseeded_gmm), match="random_state=seed")
    fails(checks.check_fit_gmm, student(lambda f, n, seed=0: GaussianMixture(2, random_state=seed).fit(np.asarray(f))),
          match="components")
    fails(checks.check_fit_gmm, student(lambda f, n, seed=0: GaussianMixture(n, random_state=seed)), match="not fitted")
    fails(checks.check_fit_gmm, student(lambda f, n, seed=0: GaussianMixture(n, random_state=seed, reg_covar=1e-3)
                                        .fit(np.asarray(f)[:40])), match="log-likelihood")
    fails(checks.check_fit_gmm, student(lambda f, n, seed=0: np.asarray(f).mean(0)), match="GaussianMixture, got ndarray")


def log_likelihood_scores(gmm, f):
    return gmm.score_samples(np.asarray(f))


def test_ood_scores(ref02, student):
    checks.check_ood_scores(student(ref02.ood_scores))
    checks.check_ood_scores(student(lambda gmm, f: torch.from_numpy(-gmm.score_samples(np.asarray(f)))), seed=2)
    fails(checks.check_ood_scores, student(log_likelihood_scores), match="return its negative")
    fails(checks.check_ood_scores, student(lambda gmm, f: -gmm.score(np.asarray(f))), match="NumPy array")
    fails(checks.check_ood_scores, student(lambda gmm, f: -np.exp(gmm.score_samples(np.asarray(f)))),
          match="negative log-likelihood")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device (CUDA) to put the model on")
def test_loaders_ignoring_the_model_device_fail():
    def cpu_accuracy(model, loader):
        model.eval()
        with torch.no_grad():
            return float(torch.cat([model(x).argmax(1) == t for x, t in loader]).float().mean())

    def cpu_features(model, loader):
        model.eval()
        with torch.no_grad():
            return torch.cat([model.features(x) for x, _ in loader])

    fails(checks.check_accuracy, cpu_accuracy, match="raised RuntimeError")
    fails(checks.check_extract_features, cpu_features, match="raised RuntimeError")


def pairwise_auroc(inside, outside):
    inside, outside = np.asarray(inside, dtype=float), np.asarray(outside, dtype=float)
    return float(((outside[:, None] > inside[None]) + 0.5 * (outside[:, None] == inside[None])).mean())


def strict_auroc(inside, outside):
    return float((np.asarray(outside)[:, None] > np.asarray(inside)[None]).mean())


def test_auroc(ref02, student):
    for fn in (ref02.auroc, pairwise_auroc,
               lambda i, o: roc_auc_score(np.r_[np.zeros(len(i)), np.ones(len(o))], np.r_[np.asarray(i), np.asarray(o)])):
        fn = student(fn)
        checks.check_auroc(fn)
        checks.check_auroc(fn, seed=3, n_in=7, n_out=100)
    fails(checks.check_auroc, student(lambda i, o: pairwise_auroc(o, i)), match="positive class")
    fails(checks.check_auroc, student(strict_auroc), match="one half")
    fails(checks.check_auroc, student(lambda i, o: float((np.asarray(o) > np.median(np.asarray(i))).mean())),
          match="roc_auc_score")


def test_ood_pipeline(ref02, student, monkeypatch):
    monkeypatch.setenv("COURSE_BUDGET", "grade")
    r = ref02
    answers = [student(answer) for answer in (r.MLP, r.train_classifier, r.extract_features, r.fit_gmm)]
    checks.check_ood_pipeline(*answers, student(r.ood_scores))
    fails(checks.check_ood_pipeline, *answers, student(lambda gmm, f: -r.ood_scores(gmm, f)), match="AUROC")


# ------------------------------------------------------------ both modes alike
WRONG_ANSWERS = {  # one plausible wrong answer per check, given the reference answers: (check, the answers it takes)
    "pairwise_sq_dists": lambda r: (checks.check_pairwise_sq_dists, (lambda X, C: torch.cdist(X, C),)),
    "pairwise_sq_dists_memory": lambda r: (checks.check_pairwise_sq_dists_memory, (broadcast,)),
    "kmeans_plus_plus_init": lambda r: (checks.check_kmeans_plus_plus_init, (plus_plus_variant(last_only=True),)),
    "class_mean_centroids": lambda r: (checks.check_class_mean_centroids, (class_sums,)),
    "kmeans": lambda r: (checks.check_kmeans, (variant(mean_inertia=True),)),
    "kmeans_empty_cluster": lambda r: (checks.check_kmeans_empty_cluster, (variant(empty="reinit"),)),
    "kmeans_init_modes": lambda r: (checks.check_kmeans_init_modes, (variant(plus_plus="random"),)),
    "mlp": lambda r: (checks.check_mlp, (wrong_mlps(r)["detached"][0],)),
    "accuracy": lambda r: (checks.check_accuracy, (lambda model, loader: 100 * r.accuracy(model, loader),)),
    "extract_features": lambda r: (checks.check_extract_features, (features_with_graph,)),
    "train_classifier": lambda r: (checks.check_train_classifier, (no_step, r.MLP)),
    "fit_gmm": lambda r: (checks.check_fit_gmm, (unseeded_gmm,)),
    "ood_scores": lambda r: (checks.check_ood_scores, (log_likelihood_scores,)),
    "auroc": lambda r: (checks.check_auroc, (strict_auroc,)),
    "ood_pipeline": lambda r: (checks.check_ood_pipeline, (r.MLP, r.train_classifier, r.extract_features, r.fit_gmm,
                                                           lambda gmm, f: -r.ood_scores(gmm, f))),
}


@pytest.mark.parametrize("name", WRONG_ANSWERS)
def test_wrong_answer_gets_the_same_message_judged(name, ref02, judged, monkeypatch):
    monkeypatch.setenv("COURSE_BUDGET", "grade")
    check, answers = WRONG_ANSWERS[name](ref02)
    assert message(check, *map(judged, answers)) == message(check, *answers)
