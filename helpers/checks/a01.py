"""Checks of assignment 01: PCA and autoencoders.

The ``_probe_*`` functions are the parts of a check that must run next to the student's objects (autograd through
their model): in a judged check they run in the student's kernel, so they return observations, never verdicts.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from ..budgets import budget
from ..runtime import get_device
from ..data import load_mnist, load_penguins, tensor_loader
from .common import (as_float, as_tensor, call, call_unchanged, expect, expect_shape, fail, fmt, generator, is_instance,
                     max_abs_diff, non_contiguous, passed, silenced, type_name)

PENGUIN_CUMULATIVE = (68.634, 88.087, 97.303, 100.0)  # %, standardized penguins, k = 1..4


def _mixed_scale_data(seed: int, n: int, d: int, offset: float = 5.0) -> torch.Tensor:
    """Correlated columns with very different means and scales, float64."""
    g = generator(seed)
    mixing = torch.randn(d, d, generator=g, dtype=torch.float64)
    scales = torch.logspace(1, -1, d, dtype=torch.float64)  # variances far apart: a well-defined order
    X = torch.randn(n, d, generator=g, dtype=torch.float64) * scales @ torch.linalg.qr(mixing)[0]
    return X + offset * torch.randn(d, generator=g, dtype=torch.float64) + offset


# ------------------------------------------------------------------ standardize
def check_standardize(standardize, seed: int = 0, n: int = 20, d: int = 4) -> None:
    """``standardize`` must match ``StandardScaler().fit_transform`` (population std) in float64 and float32."""
    X64 = _mixed_scale_data(seed, n, d) * torch.logspace(0, 3, d, dtype=torch.float64)
    expected = torch.from_numpy(StandardScaler().fit_transform(X64.numpy()))
    # float32 arrives in a non-contiguous layout (as from a transpose or a column slice): `.view` fails on it.
    for dtype in (torch.float64, torch.float32):
        X = X64.to(dtype) if dtype == torch.float64 else non_contiguous(X64.to(dtype))
        out = as_tensor(call_unchanged(standardize, X, what=f"standardize(X) with {dtype}"), "standardize(X)")
        expect_shape(out, X.shape, "standardize(X)")
        err = max_abs_diff(out, expected)
        if err < 1e-4:
            continue
        centred = X64 - X64.mean(0)
        if max_abs_diff(out, centred / X64.std(0, correction=1)) < 1e-4:
            fail("standardize divides by the sample standard deviation (n − 1). StandardScaler uses the population "
                 "one (n): torch.std(..., correction=0) or unbiased=False.")
        if max_abs_diff(out.mean(0), torch.zeros(d)) > 1e-4:
            fail(f"standardized columns should have mean 0, got means {fmt(out.mean(0))}: subtract the column means.")
        if max_abs_diff(out.std(0, correction=0), torch.ones(d)) > 1e-3:
            fail(f"standardized columns should have (population) std 1, got {fmt(out.std(0, correction=0))}: "
                 "divide each column by its own standard deviation (dim=0).")
        fail(f"standardize(X) differs from StandardScaler by up to {err:.3g} ({dtype}).")
    passed(f"standardize matches scikit-learn's StandardScaler (float64 and float32, n={n}, d={d}; input left unchanged)")


# -------------------------------------------------------------------------- pca
def _unpack_pca(result, n: int, d: int, k: int):
    if not (isinstance(result, (tuple, list)) and len(result) == 3):
        fail(f"pca(X, k) should return a tuple (components, explained_variance_ratio, projected), got {type_name(result)}.")
    components, ratio, projected = (as_tensor(r, name).to(torch.float64) for r, name in
                                    zip(result, ("components", "explained_variance_ratio", "projected")))
    expect_shape(components, (k, d), f"components for k={k}")
    expect_shape(ratio, (k,), f"explained_variance_ratio for k={k}")
    expect_shape(projected, (n, k), f"projected for k={k}")
    return components, ratio, projected


def _diagnose_components(X: torch.Tensor, components: torch.Tensor, reference: PCA, k: int) -> str:
    """Name the likely mistake when the directions are not scikit-learn's."""
    overlap = (components @ torch.from_numpy(reference.components_).T).abs()
    if torch.allclose(overlap.max(1).values, torch.ones(k, dtype=torch.float64), atol=1e-3):
        return "they are principal directions, but not sorted by decreasing variance (sort eigenvalues descending)."
    _, _, Vt_raw = torch.linalg.svd(X, full_matrices=False)
    if (components @ Vt_raw[:k].T).abs().diagonal().min() > 1 - 1e-3:
        return "they are the directions of the *uncentred* data: subtract the column means before the decomposition."
    scaled = torch.from_numpy(PCA().fit(StandardScaler().fit_transform(X.numpy())).components_[:k])
    if (components @ scaled.T).abs().diagonal().min() > 1 - 1e-3:
        return "they are the directions of the standardized data: pca must centre X but not scale it."
    norms = components.norm(dim=1)
    if not torch.allclose(norms, torch.ones(k, dtype=torch.float64), atol=1e-3):
        return f"rows should have unit norm, got norms {fmt(norms)}."
    if torch.allclose(overlap.diagonal(), torch.ones(k, dtype=torch.float64), atol=0.1):
        return "they are close but not exact: did you take eigenvectors as *columns* of eigh's output (rows of components = columns of V)?"
    return "take the eigenvectors of the covariance of the centred data (or the right singular vectors of its SVD)."


def check_pca(pca, seed: int = 0, n: int = 200, d: int = 5, ks=(2,)) -> None:
    """``pca`` against scikit-learn: directions (up to sign), ratios, projections, for each k in ``ks``."""
    X64 = _mixed_scale_data(seed, n, d)
    reference = PCA(n_components=d).fit(X64.numpy())
    ref_components = torch.from_numpy(reference.components_)
    ref_ratio = torch.from_numpy(reference.explained_variance_ratio_)
    for dtype in (torch.float64, torch.float32):
        for k in ks:
            X = X64.to(dtype) if dtype == torch.float64 else non_contiguous(X64.to(dtype))
            components, ratio, projected = _unpack_pca(call_unchanged(pca, X, k, what=f"pca(X, {k}) with {dtype}"), n, d, k)
            tol = 1e-6 if dtype == torch.float64 else 1e-3
            overlap = (components @ ref_components[:k].T).abs().diagonal()
            if overlap.min() < 1 - 1e-3 or max_abs_diff(components.norm(dim=1), torch.ones(k)) > 1e-3:
                fail(f"pca(X, {k}): components are not scikit-learn's principal directions (|cos| with them: "
                     f"{fmt(overlap)}, expected all 1): " + _diagnose_components(X64, components, reference, k))
            if max_abs_diff(ratio, ref_ratio[:k]) > max(tol, 1e-5):
                if abs(float(ratio.sum()) - 1) < 1e-4 and k < d:
                    fail(f"pca(X, {k}): explained_variance_ratio sums to 1 over the k kept components: divide by the "
                         f"variance of *all* d directions. Expected {fmt(ref_ratio[:k])}, got {fmt(ratio)}.")
                fail(f"pca(X, {k}): explained_variance_ratio should be {fmt(ref_ratio[:k])}, got {fmt(ratio)} "
                     "(eigenvalue / sum of all eigenvalues, decreasing).")
            expected_projection = (X64 - X64.mean(0)) @ components.T
            if max_abs_diff(projected, expected_projection) > 1e-4 * float(expected_projection.abs().max()):
                if max_abs_diff(projected, X64 @ components.T) < 1e-3 * float(expected_projection.abs().max()):
                    fail(f"pca(X, {k}): projected = X @ components.T without centring; use (X - mean) @ components.T.")
                fail(f"pca(X, {k}): projected should be (X - mean) @ components.T (with your own components and their "
                     f"signs); it differs by up to {max_abs_diff(projected, expected_projection):.3g}.")
    passed(f"pca matches scikit-learn's PCA (k in {tuple(ks)}, float64 and float32, n={n}, d={d})")


def check_pca_penguins(pca, standardize) -> None:
    """Cumulative explained variance on standardized penguins: 68.63 / 88.09 / 97.30 / 100 %."""
    X, _, _ = load_penguins()
    Z = as_tensor(call(standardize, X.clone(), what="standardize(penguins)"), "standardize(penguins)")
    _, ratio, _ = _unpack_pca(call(pca, Z, 4, what="pca(standardize(penguins), 4)"), len(X), 4, 4)
    cumulative = 100 * ratio.cumsum(0)
    expected = torch.tensor(PENGUIN_CUMULATIVE, dtype=torch.float64)
    if max_abs_diff(cumulative, expected) > 0.01:
        fail(f"cumulative explained variance on standardized penguins should be {fmt(expected, 5)} %, got "
             f"{fmt(cumulative, 5)} %. Check that standardize centres each column and divides it by its own standard "
             "deviation, and that pca sorts the ratios and divides by the variance of all d directions.")
    passed("penguins: cumulative explained variance " + " / ".join(f"{v:.2f}" for v in cumulative.tolist()) + " %")


# ----------------------------------------------------------------- autoencoder
def _probe_reconstruction_gradients(model, x) -> list:
    """Backpropagate the reconstruction loss through ``model``: each parameter's summed |gradient|, None where none
    arrived."""
    loss = ((model(x) - x) ** 2).mean()
    if loss.requires_grad:  # else the output is detached: no parameter gets a gradient
        loss.backward()
    return [None if p.grad is None else float(p.grad.abs().sum()) for p in model.parameters()]


def check_autoencoder(Autoencoder, seed: int = 0) -> None:
    """Shapes of ``encode``/``decode``/``forward``, outputs in [0, 1], the latent size honoured, gradients flow."""
    torch.manual_seed(seed)
    x = torch.rand(5, 1, 28, 28, generator=generator(seed))
    for latent_dim in (2, 3):
        model = call(Autoencoder, latent_dim=latent_dim, what=f"Autoencoder(latent_dim={latent_dim})")
        expect(is_instance(model, torch.nn.Module), "Autoencoder should subclass torch.nn.Module.")
        model.eval()
        with torch.no_grad():
            z = as_tensor(call(model.encode, x, what="model.encode(x)"), "encode(x)")
            expect_shape(z, (5, latent_dim), f"encode(x) with latent_dim={latent_dim}")
            far = torch.linspace(-50, 50, 5 * latent_dim).reshape(5, latent_dim)
            for codes, label in ((z, "decode(encode(x))"), (far, "decode(z) for large codes")):
                out = as_tensor(call(model.decode, codes, what="model.decode(z)"), "decode(z)")
                expect_shape(out, (5, 1, 28, 28), label)
                expect(bool(out.min() >= 0 and out.max() <= 1),
                       f"{label} has values in [{float(out.min()):.3g}, {float(out.max()):.3g}]; images live in [0, 1] "
                       "(end the decoder with a sigmoid).")
            y = as_tensor(call(model, x, what="model(x)"), "model(x)")
            expect(max_abs_diff(y, model.decode(model.encode(x))) < 1e-5, "forward(x) should return decode(encode(x)).")
    model = call(Autoencoder, what="Autoencoder()")
    expect(tuple(model.encode(x).shape) == (5, 2), "Autoencoder() should default to latent_dim=2.")
    model.train()
    gradients = call(_probe_reconstruction_gradients, model, x, what="the reconstruction loss's backward() through Autoencoder()")
    expect(type(gradients) is list and any(type(g) is float and g > 0 for g in gradients),
           "no parameter received a gradient from the reconstruction loss: is the output detached?")
    passed("Autoencoder: encode [B, latent_dim], decode [B, 1, 28, 28] in [0, 1], forward = decode ∘ encode")


# ---------------------------------------------------------------- early stopping
EARLY_STOPPING_CASES = (
    # (patience, losses, index of the call that must return True, or None)
    (2, [1.0, 0.8, 0.8, 0.9, 0.7], 3),          # an equal loss is not an improvement
    (3, [5.0, 4.0, 4.5, 4.5, 3.0, 3.5, 3.5, 3.5, 1.0], 7),  # the counter resets on improvement
    (1, [2.0, 1.0, 0.5, 0.5, 0.1], 3),
    (4, [3.0, 2.0, 1.0, 0.5, 0.25], None),      # always improving: never stop
)


def check_early_stopping(EarlyStopping) -> None:
    """``step`` returns True exactly at the ``patience``-th consecutive call without strict improvement."""
    for patience, losses, stop_at in EARLY_STOPPING_CASES:
        stopper = call(EarlyStopping, patience, what=f"EarlyStopping({patience})")
        best, bad = float("inf"), 0
        for i, loss in enumerate(losses):
            decision = call(stopper.step, loss, what=f"step({loss})")
            if loss < best:
                best, bad = loss, 0
            else:
                bad += 1
            history = f"patience={patience}, losses so far {losses[:i + 1]}"
            expect(isinstance(decision, (bool, np.bool_)) or (isinstance(decision, torch.Tensor) and decision.numel() == 1),
                   f"step() should return a bool, got {type_name(decision)}.")
            expect(abs(as_float(getattr(stopper, "best_loss", None), "best_loss") - best) < 1e-12,
                   f"{history}: best_loss should be {best}, got {getattr(stopper, 'best_loss', None)}.")
            expect(int(getattr(stopper, "num_bad_epochs", -1)) == bad,
                   f"{history}: num_bad_epochs should be {bad}, got {getattr(stopper, 'num_bad_epochs', None)}"
                   + (" (only a strictly lower loss counts as an improvement)." if loss == best else "."))
            if stop_at is not None and i == stop_at:
                expect(bool(decision), f"{history}: step() should return True now ({patience} calls without strict "
                                       "improvement) but returned False — stopping one call late?")
                break
            expect(not bool(decision), f"{history}: step() returned True too early.")
    passed("EarlyStopping: stops after `patience` calls without strict improvement and tracks best_loss")


# ------------------------------------------------------------ reconstruction mse
class _AffineImage(torch.nn.Module):
    """A fixed 'autoencoder' whose reconstruction error is known in closed form; dropout on its output makes a
    missing ``model.eval()`` visible."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.5))
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.scale * x + 0.25)


def check_reconstruction_mse(reconstruction_mse, seed: int = 0, n: int = 100, batch_size: int = 32) -> None:
    """The mean over every pixel of every image of ``(model(x) - x)²``, in evaluation mode, on the model's device.

    ``n`` is not a multiple of ``batch_size``: the short last batch holds blank images whose error differs from
    the rest, so averaging the per-batch means (or assuming equal batches) gives a visibly different number.
    """
    expect(n % batch_size != 0, "check_reconstruction_mse needs a short last batch: n must not be a multiple of batch_size.")
    images = torch.rand(n, 1, 28, 28, generator=generator(seed))
    images[n - n % batch_size:] = 1.0  # error (0.5·1 + 0.25 − 1)² = 0.0625 each, far from the rest's mean
    labels = torch.zeros(n, dtype=torch.long)
    model = _AffineImage().to(get_device())  # on a GPU grader: batches must follow the model to its device
    model.train()
    expected = float(((0.5 * images + 0.25 - images) ** 2).mean())
    got = as_float(call(reconstruction_mse, model, tensor_loader(images, labels, batch_size=batch_size),
                        what="reconstruction_mse(model, loader)"), "reconstruction_mse(...)")
    if abs(got - expected) > 1e-5 * expected:
        per_image = ((0.5 * images + 0.25 - images) ** 2).flatten(1).mean(1)
        batch_means = torch.stack([chunk.mean() for chunk in per_image.split(batch_size)])
        if abs(got - expected * 28 * 28) < 1e-3 * expected * 784:
            fail(f"reconstruction_mse returned {got:.5g}, expected {expected:.5g}: you summed over pixels; take the mean.")
        if abs(got - float(batch_means.sum())) < 1e-4 * float(batch_means.sum()):
            fail(f"reconstruction_mse returned {got:.5g}, expected {expected:.5g}: divide by the number of batches "
                 "(or images), not accumulate sums.")
        if abs(got - float(batch_means.mean())) < 1e-5 * expected:
            fail(f"reconstruction_mse returned {got:.5g}, the mean of the per-batch means; expected {expected:.5g}. The "
                 f"last batch is shorter ({n % batch_size} of {n} images): add up the squared errors (reduction='sum') "
                 "and divide by the total number of pixels.")
        padded = expected * n / (batch_size * len(batch_means))
        if min(abs(got - float(per_image[:n - n % batch_size].mean())), abs(got - padded)) < 1e-5 * expected:
            fail(f"reconstruction_mse returned {got:.5g}, expected {expected:.5g}: the short last batch was left out "
                 "or counted as a full one; count the images (or pixels) each batch really has.")
        fail(f"reconstruction_mse returned {got:.5g}, expected the mean squared error over all pixels {expected:.5g}. "
             "Put the model in evaluation mode (model.eval()): this model uses dropout.")
    passed("reconstruction_mse: mean squared error over every pixel of the loader (short last batch, evaluation mode)")


# ------------------------------------------------------------ train_autoencoder
def _expected_stop(val_loss, patience: int, epochs: int) -> int:
    """How many epochs early stopping allows given this validation history."""
    best, bad = float("inf"), 0
    for epoch, loss in enumerate(val_loss, start=1):
        if loss < best:
            best, bad = loss, 0
        else:
            bad += 1
            if bad == patience:
                return epoch
    return min(len(val_loss), epochs)


def _val_mse(model, images) -> float:
    model.eval()
    images = images.to(next(model.parameters()).device)  # the student's loop may have moved the model to the GPU
    with torch.no_grad():
        return float(((model(images) - images) ** 2).mean())


def check_train_autoencoder(train_autoencoder, Autoencoder, seed: int = 0, epochs: int = 8, patience: int = 2) -> None:
    """Early stopping with ``patience``, and the best-validation weights restored at the end.

    The validation images are the *inverted* training images, so learning
    the training set makes the validation loss worse from the first epoch:
    a correct loop stops after 1 + patience epochs and restores epoch 1.
    """
    images, labels = load_mnist("train")
    g = generator(seed)
    pick = torch.randperm(len(images), generator=g)[:768]
    train_x, val_x = images[pick[:512]], 1.0 - images[pick[512:]]
    torch.manual_seed(seed)
    model = call(Autoencoder, latent_dim=2, what="Autoencoder(latent_dim=2)")
    history = call(train_autoencoder, model, tensor_loader(train_x, labels[pick[:512]], batch_size=64, shuffle=True, generator=g),
                   tensor_loader(val_x, labels[pick[512:]], batch_size=64), epochs=epochs, lr=1e-3, patience=patience,
                   what="train_autoencoder(model, train_loader, val_loader, epochs=8, lr=1e-3, patience=2)")
    expect(isinstance(history, dict) and {"train_loss", "val_loss"} <= set(history),
           "train_autoencoder should return a dict with the lists 'train_loss' and 'val_loss'.")
    train_loss = [as_float(v, "train_loss entry") for v in history["train_loss"]]
    val_loss = [as_float(v, "val_loss entry") for v in history["val_loss"]]
    expect(len(train_loss) == len(val_loss) and 1 <= len(val_loss) <= epochs,
           f"train_loss and val_loss should have one entry per epoch run (1 to {epochs}); got {len(train_loss)} and {len(val_loss)}.")
    stop = _expected_stop(val_loss, patience, epochs)
    expect(len(val_loss) == stop,
           f"with patience={patience} and validation losses {fmt(val_loss)}, training should have run {stop} epochs, "
           f"but it ran {len(val_loss)}" + (" — it stopped late (or never)." if len(val_loss) > stop else " — it stopped early."))
    final = _val_mse(model, val_x)
    best = min(val_loss)
    expect(abs(final - best) <= 2e-3 * best,
           f"after training the model's validation MSE is {final:.5g}, but the best epoch had {best:.5g}: "
           "keep a copy of the best weights (copy.deepcopy(model.state_dict())) and load them back at the end.")
    passed(f"train_autoencoder: stopped after {len(val_loss)} epochs (patience {patience}) and restored the best weights")


def pca_baseline_mse(train_images: torch.Tensor, test_images: torch.Tensor, k: int = 2) -> float:
    """Test reconstruction MSE of scikit-learn's PCA with ``k`` components (the bar to beat)."""
    pca = PCA(n_components=k, svd_solver="randomized", random_state=0).fit(train_images.flatten(1).numpy())
    test = test_images.flatten(1).numpy()
    return float(((pca.inverse_transform(pca.transform(test)) - test) ** 2).mean())


def check_autoencoder_beats_pca(Autoencoder, train_autoencoder, reconstruction_mse, seed: int = 0) -> None:
    """Trained with the budget's sizes, the 2-D autoencoder reconstructs MNIST test digits better than PCA-2."""
    sizes = budget("01")
    images, labels = load_mnist("train")
    test_images, test_labels = load_mnist("test")
    g = generator(seed)
    pick = torch.randperm(len(images), generator=g)
    train, val = pick[:sizes.ae_train], pick[sizes.ae_train:sizes.ae_train + sizes.ae_val]
    torch.manual_seed(seed)
    model = call(Autoencoder, latent_dim=2, what="Autoencoder(latent_dim=2)")
    history = call(train_autoencoder, model,
                   tensor_loader(images[train], labels[train], batch_size=sizes.ae_batch, shuffle=True, generator=g),
                   tensor_loader(images[val], labels[val], batch_size=512),
                   epochs=sizes.ae_epochs, lr=sizes.ae_lr, patience=sizes.ae_patience, what="train_autoencoder(...)")
    with silenced():
        test_mse = as_float(call(reconstruction_mse, model, tensor_loader(test_images, test_labels, batch_size=1000),
                                 what="reconstruction_mse(model, test_loader)"), "reconstruction_mse")
    baseline = pca_baseline_mse(images[train], test_images)
    expect(test_mse < baseline,
           f"after {len(history['val_loss'])} epochs on {sizes.ae_train} images the autoencoder's test MSE is "
           f"{test_mse:.4f}, not below PCA-2's {baseline:.4f}. A correct 784-256-128-2 MLP reaches about 0.05 here: "
           "check the loss (MSE on [0, 1] images), the optimiser step and the learning rate.")
    passed(f"autoencoder test MSE {test_mse:.4f} < PCA-2 {baseline:.4f} ({sizes.name} budget)")
