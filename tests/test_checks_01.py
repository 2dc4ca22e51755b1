"""The checkers of assignment 01 pass the reference and fail plausible wrong answers, in the student's own kernel
(local) and as grading runs them (judged: the answers live in a separate stand-in kernel, behind Remote handles)."""
import copy

import pytest
import torch
from torch import nn

from conftest import fails, message
from helpers.checks import a01 as checks


# ------------------------------------------------------------------ standardize
def test_standardize_reference_passes(ref01, student):
    standardize = student(ref01.standardize)
    for seed in range(5):
        checks.check_standardize(standardize, seed=seed)


def test_standardize_alternative_styles_pass(student):
    def numpy_style(X):
        import numpy as np
        a = np.asarray(X, dtype=np.float64)
        return (a - a.mean(0)) / a.std(0)

    checks.check_standardize(student(numpy_style))
    checks.check_standardize(student(lambda X: (X - X.mean(0)) / torch.sqrt(((X - X.mean(0)) ** 2).mean(0))))


@pytest.mark.parametrize("wrong, message", [
    (lambda X: (X - X.mean(0)) / X.std(0), "sample standard deviation"),
    (lambda X: X / X.std(0, correction=0), "mean 0"),
    (lambda X: (X - X.mean(0)) / X.std(), "std 1"),
    (lambda X: (X - X.mean(1, keepdim=True)) / X.std(1, correction=0, keepdim=True), "mean 0"),
])
def test_standardize_wrong_fails(wrong, message, student):
    fails(checks.check_standardize, student(wrong), match=message)


def test_standardize_in_place_fails(student):
    def in_place(X):
        X -= X.mean(0)
        X /= X.std(0, correction=0)
        return X

    fails(checks.check_standardize, student(in_place), match="in place")


def test_pca_centring_in_place_fails(student):
    def in_place(X, k):
        X -= X.mean(0)
        _, s, vt = torch.linalg.svd(X, full_matrices=False)
        return vt[:k], (s**2 / (s**2).sum())[:k], X @ vt[:k].T

    fails(checks.check_pca, student(in_place), match="in place")


def test_not_implemented_is_reported(student):
    def stub(X):
        raise NotImplementedError()

    fails(checks.check_standardize, student(stub), match="not implemented yet")


# -------------------------------------------------------------------------- pca
def eigh_pca(X, k):
    Xc = X - X.mean(0)
    values, vectors = torch.linalg.eigh(Xc.T @ Xc / (len(X) - 1))
    order = values.argsort(descending=True)
    values, vectors = values[order], vectors[:, order]
    return vectors[:, :k].T, values[:k] / values.sum(), Xc @ vectors[:, :k]


def sklearn_like_numpy_pca(X, k):
    import numpy as np
    a = np.asarray(X)
    centred = a - a.mean(0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    return vt[:k], (s**2 / (s**2).sum())[:k], centred @ vt[:k].T


@pytest.mark.parametrize("style", ["reference", "eigh", "numpy", "flipped signs"])
def test_pca_correct_styles_pass(ref01, style, student):
    fn = {"reference": ref01.pca, "eigh": eigh_pca, "numpy": sklearn_like_numpy_pca}.get(style)
    if style == "flipped signs":
        def fn(X, k):
            c, r, p = ref01.pca(X, k)
            signs = torch.tensor([(-1.0) ** i for i in range(k)], dtype=X.dtype)
            return c * signs[:, None], r, p * signs
    fn = student(fn)
    for seed in range(3):
        checks.check_pca(fn, seed=seed, ks=(1, 2, 5))
    checks.check_pca(fn, seed=9, n=8, d=6, ks=(4,))
    checks.check_pca_penguins(fn, student(ref01.standardize))


def uncentred(X, k):
    _, s, vt = torch.linalg.svd(X, full_matrices=False)
    return vt[:k], (s**2 / (s**2).sum())[:k], X @ vt[:k].T


def unsorted(X, k):
    Xc = X - X.mean(0)
    values, vectors = torch.linalg.eigh(Xc.T @ Xc)  # ascending order, not sorted back
    return vectors[:, :k].T, values[:k] / values.sum(), Xc @ vectors[:, :k]


def ratio_over_k(X, k):
    c, r, p = eigh_pca(X, k)
    return c, r / r.sum(), p


def columns_not_rows(X, k):
    Xc = X - X.mean(0)
    values, vectors = torch.linalg.eigh(Xc.T @ Xc)
    order = values.argsort(descending=True)
    vectors = vectors[order][:, order]  # rows permuted instead of columns
    return vectors[:k], values[order][:k] / values.sum(), Xc @ vectors[:k].T


def projection_uncentred(X, k):
    c, r, _ = eigh_pca(X, k)
    return c, r, X @ c.T


def scales_inside(X, k):
    return eigh_pca((X - X.mean(0)) / X.std(0), k)


@pytest.mark.parametrize("wrong, message", [
    (uncentred, "uncentred"),
    (unsorted, "not sorted"),
    (ratio_over_k, "d directions"),
    (columns_not_rows, "principal directions"),
    (projection_uncentred, "without centring"),
    (scales_inside, "standardized data"),
])
def test_pca_wrong_fails(wrong, message, student):
    fails(checks.check_pca, student(wrong), match=message)


def test_pca_penguins_needs_standardized_sorted_pca(ref01, student):
    pca, standardize = student(ref01.pca), student(ref01.standardize)
    checks.check_pca_penguins(pca, standardize)
    fails(checks.check_pca_penguins, pca, student(lambda X: X - X.mean(0)), match="68.63")
    fails(checks.check_pca_penguins, student(unsorted), standardize, match="68.63")


# ----------------------------------------------------------------- autoencoder
def test_autoencoder_reference_passes(ref01, student):
    checks.check_autoencoder(student(ref01.Autoencoder))


def test_autoencoder_cnn_passes(student):
    class ConvAutoencoder(nn.Module):
        def __init__(self, latent_dim=2):
            super().__init__()
            self.enc = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, latent_dim))
            self.dec = nn.Sequential(nn.Linear(latent_dim, 8 * 14 * 14), nn.ReLU(), nn.Unflatten(1, (8, 14, 14)),
                                     nn.ConvTranspose2d(8, 1, 4, 2, 1), nn.Sigmoid())

        def encode(self, x):
            return self.enc(x)

        def decode(self, z):
            return self.dec(z)

        def forward(self, x):
            return self.decode(self.encode(x))

    checks.check_autoencoder(student(ConvAutoencoder))


def wrong_autoencoders(ref01) -> dict:
    """Plausible mistakes in the Autoencoder class, by the message they must get."""
    class NoSigmoid(ref01.Autoencoder):
        def decode(self, z):
            return self.decoder[:-2](z).reshape(-1, 1, 28, 28)

    class FixedLatent(ref01.Autoencoder):
        def __init__(self, latent_dim=2):
            super().__init__(latent_dim=2)

    class FlatOutput(ref01.Autoencoder):
        def decode(self, z):
            return super().decode(z).flatten(1)

    class Detached(ref01.Autoencoder):
        def forward(self, x):
            with torch.no_grad():
                return super().forward(x)

    class NotAModule:  # the layers of a module, without nn.Module
        def __init__(self, latent_dim=2):
            self.inner = ref01.Autoencoder(latent_dim)

        def encode(self, x):
            return self.inner.encode(x)

        def decode(self, z):
            return self.inner.decode(z)

        def __call__(self, x):
            return self.inner(x)

    return {r"\[0, 1\]": NoSigmoid, "latent_dim=3": FixedLatent, "shape": FlatOutput, "is the output detached": Detached,
            "subclass torch.nn.Module": NotAModule}


def test_autoencoder_wrong_fail(ref01, student):
    for expected, wrong in wrong_autoencoders(ref01).items():
        fails(checks.check_autoencoder, student(wrong), match=expected)


# ---------------------------------------------------------------- early stopping
def test_early_stopping_reference_passes(ref01, student):
    checks.check_early_stopping(student(ref01.EarlyStopping))


def make_stopper(improved, stop):
    class Stopper:
        def __init__(self, patience=5):
            self.patience, self.best_loss, self.num_bad_epochs = patience, float("inf"), 0

        def step(self, val_loss):
            if improved(val_loss, self.best_loss):
                self.best_loss, self.num_bad_epochs = val_loss, 0
            else:
                self.num_bad_epochs += 1
            return stop(self.num_bad_epochs, self.patience)
    return Stopper


@pytest.mark.parametrize("improved, stop, message", [
    (lambda new, best: new < best, lambda bad, p: bad > p, "late"),             # one call late
    (lambda new, best: new <= best, lambda bad, p: bad >= p, "strictly"),        # equal counts as improvement
    (lambda new, best: new < best, lambda bad, p: bad >= p - 1, "too early"),    # one call early
    (lambda new, best: new < best - 0.2, lambda bad, p: bad >= p, "best_loss"),  # min_delta nobody asked for
])
def test_early_stopping_wrong_fails(improved, stop, message, student):
    fails(checks.check_early_stopping, student(make_stopper(improved, stop)), match=message)


# ------------------------------------------------------------ reconstruction mse
def test_reconstruction_mse_reference_passes(ref01, student):
    reconstruction_mse = student(ref01.reconstruction_mse)
    checks.check_reconstruction_mse(reconstruction_mse)
    checks.check_reconstruction_mse(reconstruction_mse, seed=3, n=70, batch_size=16)


def evaluated(fn):
    """Wrap a reconstruction_mse body with evaluation mode, no graph and the model's device."""
    def wrapped(model, loader):
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            return fn(model, [(x.to(device), y) for x, y in loader], loader)
    return wrapped


@pytest.mark.parametrize("style", [
    evaluated(lambda model, batches, loader: sum(float(((model(x) - x) ** 2).sum()) for x, _ in batches)
              / (len(loader.dataset) * 784)),
    evaluated(lambda model, batches, loader: float(torch.cat([((model(x) - x) ** 2).flatten() for x, _ in batches]).mean())),
    evaluated(lambda model, batches, loader: sum(float(nn.functional.mse_loss(model(x), x)) * len(x) for x, _ in batches)
              / sum(len(x) for x, _ in batches)),
])
def test_reconstruction_mse_other_styles_pass(style, student):
    style = student(style)
    checks.check_reconstruction_mse(style)
    checks.check_reconstruction_mse(style, seed=5, n=70, batch_size=16)


def training_mode_mse(model, loader):
    with torch.no_grad():
        return float(torch.cat([((model(x) - x) ** 2).flatten() for x, _ in loader]).mean())


WRONG_RECONSTRUCTION_MSE = {  # by the message they must get
    "summed over pixels": evaluated(lambda model, batches, loader: sum(float(((model(x) - x) ** 2).sum()) for x, _ in batches)
                                    / sum(len(x) for x, _ in batches)),
    "number of batches": evaluated(lambda model, batches, loader: sum(float(((model(x) - x) ** 2).mean()) for x, _ in batches)),
    "mean of the per-batch means": evaluated(lambda model, batches, loader:
                                             sum(float(((model(x) - x) ** 2).mean()) for x, _ in batches) / len(batches)),
    "short last batch": evaluated(lambda model, batches, loader: sum(float(((model(x) - x) ** 2).sum()) for x, _ in batches)
                                  / (len(batches) * len(batches[0][0]) * 784)),
    "evaluation mode": training_mode_mse,
}


def test_reconstruction_mse_wrong_fails(student):
    for expected, wrong in WRONG_RECONSTRUCTION_MSE.items():
        fails(checks.check_reconstruction_mse, student(wrong), match=expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device (CUDA) to put the model on")
def test_reconstruction_mse_ignoring_the_device_fails():
    def cpu_batches(model, loader):
        model.eval()
        with torch.no_grad():
            return float(torch.cat([((model(x) - x) ** 2).flatten() for x, _ in loader]).mean())

    fails(checks.check_reconstruction_mse, cpu_batches, match="raised RuntimeError")


# ------------------------------------------------------------ train_autoencoder
def test_train_autoencoder_reference_passes(ref01, student):
    checks.check_train_autoencoder(student(ref01.train_autoencoder), student(ref01.Autoencoder))


def variant_trainer(ref01, restore=True, extra_epochs=0):
    """The reference loop with one deliberate flaw."""
    def train(model, train_loader, val_loader, epochs=30, lr=1e-3, patience=5):
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        stopper = ref01.EarlyStopping(patience + extra_epochs)
        best = copy.deepcopy(model.state_dict())
        history = {"train_loss": [], "val_loss": []}
        for _ in range(epochs):
            model.train()
            for x, _ in train_loader:
                loss = nn.functional.mse_loss(model(x), x)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            val = ref01.reconstruction_mse(model, val_loader)
            history["train_loss"].append(float(loss))
            history["val_loss"].append(val)
            if val < stopper.best_loss:
                best = copy.deepcopy(model.state_dict())
            if stopper.step(val):
                break
        if restore:
            model.load_state_dict(best)
        return history
    return train


def test_train_autoencoder_without_restore_fails(ref01, student):
    fails(checks.check_train_autoencoder, student(variant_trainer(ref01, restore=False)), student(ref01.Autoencoder),
          match="best weights")


def test_train_autoencoder_stopping_late_fails(ref01, student):
    fails(checks.check_train_autoencoder, student(variant_trainer(ref01, extra_epochs=1)), student(ref01.Autoencoder),
          match="stopped late")


def test_train_autoencoder_never_stopping_fails(ref01, student):
    fails(checks.check_train_autoencoder, student(variant_trainer(ref01, extra_epochs=100)), student(ref01.Autoencoder),
          match="stopped late")


def test_autoencoder_beats_pca(ref01, student, monkeypatch):
    monkeypatch.setenv("COURSE_BUDGET", "grade")
    checks.check_autoencoder_beats_pca(student(ref01.Autoencoder), student(ref01.train_autoencoder),
                                       student(ref01.reconstruction_mse))


def untrained(ref01):
    """A train_autoencoder that only measures: the model stays as initialised."""
    def no_training(model, train_loader, val_loader, epochs=30, lr=1e-3, patience=5):
        val = ref01.reconstruction_mse(model, val_loader)
        return {"train_loss": [val], "val_loss": [val]}
    return no_training


def test_autoencoder_that_does_not_learn_fails(ref01, student, monkeypatch):
    monkeypatch.setenv("COURSE_BUDGET", "grade")
    fails(checks.check_autoencoder_beats_pca, student(ref01.Autoencoder), student(untrained(ref01)),
          student(ref01.reconstruction_mse), match="PCA-2")


# ------------------------------------------------------------ both modes alike
WRONG_ANSWERS = {  # one plausible wrong answer per check, given the reference answers: (check, the answers it takes)
    "standardize": lambda r: (checks.check_standardize, (lambda X: (X - X.mean(0)) / X.std(0),)),
    "pca": lambda r: (checks.check_pca, (uncentred,)),
    "pca_penguins": lambda r: (checks.check_pca_penguins, (unsorted, r.standardize)),
    "autoencoder": lambda r: (checks.check_autoencoder, (wrong_autoencoders(r)["is the output detached"],)),
    "early_stopping": lambda r: (checks.check_early_stopping,
                                 (make_stopper(lambda new, best: new <= best, lambda bad, p: bad >= p),)),
    "reconstruction_mse": lambda r: (checks.check_reconstruction_mse, (WRONG_RECONSTRUCTION_MSE["mean of the per-batch means"],)),
    "train_autoencoder": lambda r: (checks.check_train_autoencoder, (variant_trainer(r, restore=False), r.Autoencoder)),
    "autoencoder_beats_pca": lambda r: (checks.check_autoencoder_beats_pca,
                                        (r.Autoencoder, untrained(r), r.reconstruction_mse)),
}


@pytest.mark.parametrize("name", WRONG_ANSWERS)
def test_wrong_answer_gets_the_same_message_judged(name, ref01, judged, monkeypatch):
    monkeypatch.setenv("COURSE_BUDGET", "grade")
    check, answers = WRONG_ANSWERS[name](ref01)
    assert message(check, *map(judged, answers)) == message(check, *answers)
