"""Checks of assignment 04: score-based models (Langevin dynamics, denoising score matching, SDEs).

The references are closed forms and ``torch.distributions``: the exact score of a mixture is the autograd
gradient of ``MixtureSameFamily.log_prob``, never a copy of the students' closed form.

When grading, the student's objects are handles to a separate kernel and
results come back as plain data without a graph (helpers/bridge.py). So what
needs autograd through the student's output, identity of the student's
objects, a subclass of the student's class, or a training loop over a model
the student built is done by a small module-level probe (``_probe_*``) run
through ``call`` in that kernel; it returns raw numbers and tensors, and every
comparison, tolerance and message stays in the check. The recording score
functions are module-level classes that record into lists: a judged call
brings a recorder's lists back. A check never draws its own inputs from a
generator after a student's call has used it (that use happens in the kernel
when judged), so that a judged check sees the numbers the self-check sees.

The device convention (x on a GPU, generators and σ levels on the CPU) is checked without a GPU: ``_probe_devices``
runs a sampler again with x0 on PyTorch's "meta" device, where mixing with a CPU tensor raises as it would on a GPU,
and reports what the check's watch saw; an error there that is not about devices proves nothing and is ignored.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from torch import distributions as D
from torch import nn

from ..budgets import budget
from ..noise import geometric_sigmas
from .common import (CheckFailed, as_float, as_tensor, call, call_unchanged, expect, expect_shape, fail, fmt, generator,
                     is_instance, max_abs_diff, passed, type_name)

# The three-Gaussian data of the assignment: equal weights, means (1,1)/4, (3,1)/4, (2,3)/4, covariance 0.01·I.
THREE_MEANS = torch.tensor([[1.0, 1.0], [3.0, 1.0], [2.0, 3.0]], dtype=torch.float64) / 4
THREE_VAR = 0.01
# Well separated, unequal weights: what the reverse-SDE checks use (wide perturbations must not merge modes).
WIDE_MEANS = torch.tensor([[-2.0, -1.0], [2.0, -1.0], [0.0, 2.5]], dtype=torch.float64)
WIDE_VAR = 0.04


# -------------------------------------------------------------------- references
def _random_mixture(seed: int, K: int, d: int, far: bool = True):
    """Random weights, means and SPD covariances (float64); with ``far`` one component sits far away."""
    g = generator(seed)
    weights = torch.rand(K, generator=g, dtype=torch.float64) + 0.2
    weights = weights / weights.sum()
    means = 2 * torch.randn(K, d, generator=g, dtype=torch.float64)
    if far:
        means[-1] += 8.0
    A = torch.randn(K, d, d, generator=g, dtype=torch.float64)
    covs = 0.3 * A @ A.transpose(1, 2) / d + 0.1 * torch.eye(d, dtype=torch.float64)
    return weights, means, covs


def _reference(weights, means, covs) -> D.MixtureSameFamily:
    return D.MixtureSameFamily(D.Categorical(probs=weights.double()),
                               D.MultivariateNormal(means.double(), covariance_matrix=covs.double()))


def _reference_score(dist: D.MixtureSameFamily, x: torch.Tensor) -> torch.Tensor:
    """∇ₓ log p(x) by autograd through ``torch.distributions`` (float64)."""
    with torch.enable_grad():
        x = x.detach().double().requires_grad_(True)
        (grad,) = torch.autograd.grad(dist.log_prob(x).sum(), x)
    return grad


def _isotropic_sample(weights, means, var: float, n: int, seed: int) -> torch.Tensor:
    """``n`` draws (float64) of Σ_k π_k N(μ_k, var·I) from ``torch.distributions``, without touching the global RNG."""
    dist = D.MixtureSameFamily(D.Categorical(probs=weights.double()),
                               D.Independent(D.Normal(means.double(), math.sqrt(var) * torch.ones_like(means.double())), 1))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return dist.sample((n,))


def _isotropic_score(x: torch.Tensor, weights, means, var: float) -> torch.Tensor:
    """The exact score of Σ_k π_k N(μ_k, var·I), in closed form (fast enough for the thousands of sampler steps).

    r_k(x) = softmax_k(log π_k − ‖x − μ_k‖²/(2·var)) and ∇ log p(x) = (Σ_k r_k μ_k − x)/var.
    """
    x64 = x.detach().double()
    logits = torch.log(weights) - ((x64[:, None, :] - means) ** 2).sum(-1) / (2 * var)
    return ((torch.softmax(logits, dim=1) @ means - x64) / var).to(x.dtype)


def _scipy_log_prob(weights, means, covs, x) -> np.ndarray:
    logs = np.stack([np.log(float(w)) + multivariate_normal(m.numpy(), c.numpy()).logpdf(x.double().numpy())
                     for w, m, c in zip(weights, means, covs)], axis=1)
    return logsumexp(logs.reshape(len(x), -1), axis=1)


def _test_points(seed: int, means: torch.Tensor, n_near: int = 40, n_far: int = 8) -> torch.Tensor:
    """Points near the means and a few far from every mean (distance 20–40)."""
    g = generator(seed + 1)
    d = means.shape[1]
    near = means[torch.randint(len(means), (n_near,), generator=g)] + torch.randn(n_near, d, generator=g, dtype=torch.float64)
    direction = torch.randn(n_far, d, generator=g, dtype=torch.float64)
    far = direction / direction.norm(dim=1, keepdim=True) * (20 + 20 * torch.rand(n_far, 1, generator=g, dtype=torch.float64))
    return torch.cat([near, far])


def _make_mixture(GaussianMixture, weights, means, covs, dtype):
    return call(GaussianMixture, weights.to(dtype).clone(), means.to(dtype).clone(), covs.to(dtype).clone(),
                what=f"GaussianMixture(weights, means, covs) with {dtype}")


def _mixture_stats(x: torch.Tensor, means: torch.Tensor):
    """Share of the points nearest to each mean, and each group's per-axis standard deviation ``[K, d]``."""
    x = x.double()
    nearest = ((x[:, None, :] - means.double()) ** 2).sum(-1).argmin(1)
    shares = torch.bincount(nearest, minlength=len(means)).double() / len(x)
    spreads = torch.stack([x[nearest == k].std(0) if (nearest == k).sum() > 2 else torch.full((x.shape[1],), float("nan"))
                           for k in range(len(means))])
    return shares, spreads


def _compare_samples(x, means, weights, spreads, what: str, weight_tol: float, spread_tol: float, cause: str) -> str:
    """Fail unless samples ``x`` have the given component shares (±weight_tol) and spreads (within spread_tol)."""
    expect(bool(torch.isfinite(x).all()), f"{what} returned NaN or infinite values: {cause}")
    shares, got_spreads = _mixture_stats(x, means)
    ratio = got_spreads / spreads
    expect(float((shares - weights).abs().max()) <= weight_tol and bool(((ratio - 1).abs() <= spread_tol).all()),
           f"{what}: shares of the samples per component {fmt(shares, 3)} (expected {fmt(weights, 3)} ± {weight_tol}) "
           f"and per-axis spreads {fmt(got_spreads.flatten(), 3)} (expected {fmt(spreads.flatten(), 3)} within "
           f"{spread_tol:.0%}). {cause}")
    return f"shares {fmt(shares, 2)}, spreads {float(got_spreads.min()):.3f}–{float(got_spreads.max()):.3f}"


# ---------------------------------------------------------- devices
class _DeviceWatch(nn.Module):
    """Score function, score model and SDE (dx = √(2t) dw) at once, for the device probe: it notes every tensor
    (x, σ, t) that reaches it on another device than the one the probe put it and x0 on, and computes on what it gets.

    An ``nn.Module`` with a parameter, so that code asking the model for its device gets the right one.
    """

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.mismatches: list[str] = []

    def _note(self, where: str, **tensors) -> None:
        for name, value in tensors.items():
            if isinstance(value, torch.Tensor) and value.device != self.anchor.device and not self.mismatches:
                self.mismatches.append(f"{where} received {name} on the {value.device.type} device while x0 was on "
                                       f"the {self.anchor.device.type} device")

    def forward(self, x, level=None):  # score_fn(x) (Langevin), score_fn(x, σ or t), score_model(x̃, σ)
        self._note("the score function", x=x, **({} if level is None else {"σ or t": level}))
        return -x

    def drift(self, x, t):
        self._note("sde.drift", x=x, t=t)
        return torch.zeros_like(x)

    def diffusion(self, t):
        self._note("sde.diffusion", t=t)
        return torch.sqrt(2 * t) if isinstance(t, torch.Tensor) else math.sqrt(2 * t)

    def reverse_drift(self, x, t, score_fn):
        return self.drift(x, t) - self.diffusion(t) ** 2 * score_fn(x, t)


def _probe_devices(fn, shape, dtype, args, kwargs):
    """``fn(watch, x0, *args, **kwargs)`` with x0 of ``shape`` on the CPU, then on PyTorch's "meta" device, where
    every ``_DeviceWatch`` among the arguments is that run's watch and every generator a CPU generator seeded 0.
    Per run: the error raised (type and message, or None), what the watch noted, and the generator's state after.

    "meta" tensors have a device and a shape but no data, and an operation that mixes one with a CPU tensor raises
    as it would with a GPU tensor: code that builds σ or t on the CPU, or draws noise there and leaves it there, shows
    without a GPU. Random draws on "meta" consume nothing from a generator, so the state after the call also shows
    noise drawn on x's device with the CPU generator (which a GPU refuses).
    """
    runs = []
    for device in ("cpu", "meta"):
        watch, g = _DeviceWatch().to(device), torch.Generator().manual_seed(0)
        x0 = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=dtype).to(device)
        mine = lambda v: watch if isinstance(v, _DeviceWatch) else g if isinstance(v, torch.Generator) else v  # noqa: E731
        error = None
        try:
            fn(watch, x0, *map(mine, args), **{key: mine(v) for key, v in kwargs.items()})
        except Exception as raised:  # the student's code on "meta": every error is an observation
            error = f"{type(raised).__name__}: {raised}"
        runs.append((error, list(watch.mismatches), g.get_state()))
    return runs


DEVICE_HINT = ("Draw random numbers on the CPU with the generator, then move them: torch.randn(x.shape, "
               "generator=generator, dtype=x.dtype).to(x.device); build σ and t on x's device: torch.full((len(x), 1), "
               "value, dtype=x.dtype, device=x.device), or .to(x.device) for levels taken from `sigmas`.")


def _check_devices(fn, what: str, shape, *args, dtype=torch.float32, **kwargs) -> None:
    """Fail when ``fn(watch, x0, *args, **kwargs)`` mixes x's device with the CPU, as in the notebook on a GPU: x0
    on a GPU, the generator and the σ levels on the CPU. Pass ``_DeviceWatch()`` where the call takes the check's
    score function or SDE, and any generator where it takes one. An error on "meta" that is no device error says
    nothing (the code may read values, which "meta" tensors do not have)."""
    (cpu_error, _, cpu_state), (error, mismatches, state) = call(
        _probe_devices, fn, tuple(shape), dtype, args, kwargs, what=f"{what} with x0 on another device")
    if cpu_error is not None:
        return  # the probe's small inputs did not suit this code: nothing to learn from the second run
    setting = (f"{what} with x0 on another device than the CPU (a GPU in the notebook; here PyTorch's \"meta\" "
               "device) and the generator and σ levels on the CPU")
    if mismatches:
        fail(f"{setting}: {mismatches[0]}; on a GPU the first operation that mixes the two (torch.cat in a network, "
             f"x + σ·z) raises. {DEVICE_HINT}")
    if error is not None and error.startswith("RuntimeError") and "device" in error.lower() and "cpu" in error.lower():
        fail(f"{setting}, raised {error[:300]}: a tensor made on the CPU met x. {DEVICE_HINT}")
    if error is None and not torch.equal(cpu_state, state):
        fail(f"{setting}: some random numbers are drawn on x's device with the CPU generator "
             "(torch.randn(..., generator=generator, device=x.device)), which raises on a GPU. " + DEVICE_HINT)


# ---------------------------------------------------------- GaussianMixture
def check_log_prob(GaussianMixture, seed: int = 0, K: int = 3, d: int = 2) -> None:
    """``log_prob`` against SciPy, near the means and far from them, in float64 and float32."""
    weights, means, covs = _random_mixture(seed, K, d)
    x = _test_points(seed, means)
    expected = torch.from_numpy(_scipy_log_prob(weights, means, covs, x))
    for dtype in (torch.float64, torch.float32):
        gm = _make_mixture(GaussianMixture, weights, means, covs, dtype)
        out = as_tensor(call(gm.log_prob, x.to(dtype), what=f"log_prob(x) with {dtype}"), "log_prob(x)")
        expect_shape(out, (len(x),), "log_prob(x)")
        tol = 1e-8 if dtype == torch.float64 else 1e-4
        err = ((out.double() - expected).abs() / (1 + expected.abs())).max()
        if not torch.isfinite(out).all():
            bad = x[~torch.isfinite(out)][0]
            fail(f"log_prob returned {float(out[~torch.isfinite(out)][0])} at x = {fmt(bad, 3)} (far from every mean; "
                 f"SciPy gives {float(expected[~torch.isfinite(out)][0]):.6g}): the densities underflow to 0. Work with "
                 "log-densities and combine the components with torch.logsumexp (log weights included).")
        if err > tol:
            near = slice(0, 40)
            diff = (out.double() - expected)[near]
            if diff.std() < 1e-6 * (1 + diff.abs().mean()):
                fail(f"log_prob is off by a constant {float(diff.mean()):.4g} at every point: a normalising term is "
                     "missing or wrong (−½·d·log 2π − ½·log det Σ_k).")
            expected_no_w = torch.from_numpy(_scipy_log_prob(torch.ones(K, dtype=torch.float64), means, covs, x))
            if float((out.double() - expected_no_w).abs().max()) < 1e-3:
                fail("log_prob ignores the mixture weights: add log π_k to each component's log-density.")
            fail(f"log_prob differs from SciPy's mixture log-density by up to {float(err):.3g} (relative) with {dtype}; "
                 f"expected {fmt(expected[:4])}, got {fmt(out[:4])}. Use the inverse covariance in the Mahalanobis term.")
    passed(f"log_prob matches SciPy (K={K}, d={d}, float64 and float32, points far from the means included)")


def check_score(GaussianMixture, seed: int = 0, K: int = 3, d: int = 2) -> None:
    """``score`` against autograd of the log-density (``torch.distributions``), stable far from every mean."""
    weights, means, covs = _random_mixture(seed, K, d)
    x = _test_points(seed, means)
    expected = _reference_score(_reference(weights, means, covs), x)
    for dtype in (torch.float64, torch.float32):
        gm = _make_mixture(GaussianMixture, weights, means, covs, dtype)
        out = as_tensor(call(gm.score, x.to(dtype), what=f"score(x) with {dtype}"), "score(x)")
        expect_shape(out, x.shape, "score(x)")
        expect(out.dtype == dtype, f"score(x) returned {out.dtype} for {dtype} input: keep the input dtype.")
        if not torch.isfinite(out).all():
            fail("score returned NaN or inf at points far from every mean (e.g. x = "
                 f"{fmt(x[~torch.isfinite(out).all(1)][0], 3)}): the component densities underflow to 0 and 0/0 "
                 "follows. Compute the responsibilities with a softmax of the log-densities (log-sum-exp trick).")
        rel = ((out.double() - expected).norm(dim=1) / (1 + expected.norm(dim=1))).max()
        if rel > (1e-7 if dtype == torch.float64 else 1e-4):
            if float(((out.double() + expected).norm(dim=1) / (1 + expected.norm(dim=1))).max()) < 1e-3:
                fail("score has the wrong sign: ∇ log N(x | μ, Σ) = −Σ⁻¹(x − μ).")
            equal = torch.ones(K, dtype=torch.float64) / K
            if float((out.double() - _reference_score(_reference(equal, means, covs), x)).abs().max()) < 1e-3:
                fail("score ignores the mixture weights: the responsibilities are π_k N_k(x) / Σ_j π_j N_j(x).")
            fail(f"score differs from the gradient of the log-density by up to {float(rel):.3g} (relative) with "
                 f"{dtype}; expected {fmt(expected[0])}, got {fmt(out[0])} at x = {fmt(x[0], 3)}. The score is "
                 "−Σ_k r_k(x) Σ_k⁻¹(x − μ_k) with responsibilities r_k(x).")
    passed(f"score matches autograd of the log-density (K={K}, d={d}, float64 and float32, stable far from the means)")


def check_sample(GaussianMixture, seed: int = 0, n: int = 20_000) -> None:
    """``sample``: shape and dtype, reproducible with a generator, component shares, means and covariances."""
    weights = torch.tensor([0.55, 0.3, 0.15], dtype=torch.float64)
    means = torch.tensor([[-3.0, 0.0], [3.0, 1.0], [0.0, 6.0]], dtype=torch.float64)
    covs = torch.tensor([[[1.0, 0.6], [0.6, 0.8]], [[0.5, -0.3], [-0.3, 1.2]], [[0.3, 0.0], [0.0, 0.3]]],
                        dtype=torch.float64)
    gm = _make_mixture(GaussianMixture, weights, means, covs, torch.float64)
    x = as_tensor(call(gm.sample, n, generator=generator(seed), what="sample(n, generator=g)"), "sample(n)")
    expect_shape(x, (n, 2), f"sample({n})")
    again = as_tensor(call(gm.sample, n, generator=generator(seed), what="sample(n, generator=g)"), "sample(n)")
    expect(torch.equal(x, again), "two calls of sample(n, generator=...) with equally seeded generators differ: draw "
                                  "every random number (component indices and noise) from `generator`.")
    component = _reference(weights, means, covs).component_distribution.log_prob(x[:, None].double()).argmax(1)
    shares = torch.bincount(component, minlength=3).double() / n
    tol = 5 * torch.sqrt(weights * (1 - weights) / n)
    expect(bool(((shares - weights).abs() <= tol).all()),
           f"the shares of samples per component are {fmt(shares, 3)}, expected the weights {fmt(weights, 3)}: pick "
           "each sample's component with probability π_k (torch.multinomial(weights, n, replacement=True, generator=g)).")
    for k in range(3):
        xs = x[component == k].double()
        mean_err = float((xs.mean(0) - means[k]).abs().max())
        cov = torch.cov(xs.T)
        cov_err = float((cov - covs[k]).abs().max())
        expect(mean_err < 0.1,
               f"component {k}: sample mean {fmt(xs.mean(0), 3)}, expected {fmt(means[k], 3)}.")
        if cov_err > 0.1:
            msg = f"component {k}: sample covariance {fmt(cov.flatten(), 3)}, expected {fmt(covs[k].flatten(), 3)}. "
            if float((cov - covs[k] @ covs[k]).abs().max()) < 0.1:
                msg += "You multiplied the noise by Σ itself; use a square root of Σ (its Cholesky factor L, x = μ + L z)."
            else:
                msg += "x = μ_k + L_k z with L_k the Cholesky factor of Σ_k and z ~ N(0, I)."
            fail(msg)
    passed(f"sample: shares {fmt(shares, 3)} (weights {fmt(weights, 2)}), component means and covariances right, reproducible")


def check_perturb(GaussianMixture, seed: int = 0, K: int = 3, d: int = 2, sigma: float = 0.7) -> None:
    """``perturb(σ)`` is the mixture with every covariance + σ²I, and leaves the original mixture unchanged."""
    weights, means, covs = _random_mixture(seed, K, d, far=False)
    x = _test_points(seed, means, n_far=0)
    gm = _make_mixture(GaussianMixture, weights, means, covs, torch.float64)
    noisy = call(gm.perturb, sigma, what=f"perturb({sigma})")
    expect(hasattr(noisy, "log_prob") and hasattr(noisy, "score"),
           f"perturb(σ) should return a new GaussianMixture, got {type_name(noisy)}.")
    out = as_tensor(call(noisy.log_prob, x, what="perturb(σ).log_prob(x)"), "log_prob")
    eye = torch.eye(d, dtype=torch.float64)
    expected = torch.from_numpy(_scipy_log_prob(weights, means, covs + sigma**2 * eye, x))
    if max_abs_diff(out, expected) > 1e-6 * (1 + float(expected.abs().max())):
        for wrong, cause in ((covs + sigma * eye, "you added σ·I; the variance of σz is σ², so add σ²·I."),
                             (covs + sigma**2, "you added σ² to every entry; add σ²·I (the diagonal only)."),
                             (covs * (1 + sigma**2), "you scaled the covariances; add σ²·I to each of them.")):
            if max_abs_diff(out, torch.from_numpy(_scipy_log_prob(weights, means, wrong, x))) < 1e-6 * (1 + float(expected.abs().max())):
                fail(f"perturb({sigma}).log_prob differs from the mixture with covariances Σ_k + σ²I: {cause}")
        fail(f"perturb({sigma}) should keep weights and means and add σ²I to every covariance; its log_prob differs "
             f"from that mixture's by up to {max_abs_diff(out, expected):.3g}.")
    original = as_tensor(call(gm.log_prob, x, what="log_prob(x) after perturb"), "log_prob")
    expect(max_abs_diff(original, _scipy_log_prob(weights, means, covs, x)) < 1e-6 * (1 + float(expected.abs().max())),
           "after perturb(σ) the original mixture has changed: build a new GaussianMixture instead of editing the "
           "covariances in place (covs + σ²I creates a new tensor; covs += ... does not).")
    passed(f"perturb({sigma}): covariances + σ²I, original mixture untouched")


# ---------------------------------------------------------- Langevin dynamics
def _langevin_moments(mean, var, x0, step, n_steps):
    """Exact mean and variance after ``n_steps`` of x ← x + (h/2)·(−(x − m)/v) + √h·z from the point x0.

    Each step is affine, x ← m + a(x − m) + √h z with a = 1 − h/(2v), so the chain stays Gaussian.
    """
    a = 1 - step / (2 * var)
    return mean + a**n_steps * (x0 - mean), step * (1 - a ** (2 * n_steps)) / (1 - a**2)


def _probe_x0_after(sampler, score_fn, x0, *args, **kwargs):
    """The sampler's result, and x0 as the call left it (an in-place edit shows there, also when judged)."""
    return sampler(score_fn, x0, *args, **kwargs), x0


def check_langevin(langevin_dynamics, seed: int = 0, n: int = 4000, step_size: float = 0.05, n_steps: int = 60) -> None:
    """On a Gaussian target the chains' mean and variance follow the update's exact closed form."""
    mean = torch.tensor([1.0, -2.0], dtype=torch.float64)
    var = torch.tensor([0.5, 2.0], dtype=torch.float64)
    x0_point = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    exp_mean, exp_var = _langevin_moments(mean, var, x0_point, step_size, n_steps)
    for dtype in (torch.float64, torch.float32):
        x0 = x0_point.to(dtype).repeat(n, 1)
        x0_copy = x0.clone()
        score = lambda x: -(x - mean.to(x.dtype)) / var.to(x.dtype)  # noqa: E731 — the Gaussian target's score
        out, x0_after = call(_probe_x0_after, langevin_dynamics, score, x0, step_size, n_steps, generator=generator(seed),
                             what="langevin_dynamics(score_fn, x0, step_size, n_steps, generator=g)")
        out = as_tensor(out, "langevin_dynamics")
        expect_shape(out, x0.shape, "langevin_dynamics(...) without trajectory")
        expect(out.dtype == dtype, f"langevin_dynamics returned {out.dtype} for {dtype} chains: keep the dtype of x0.")
        expect(torch.equal(x0_after, x0_copy), "langevin_dynamics changed x0 in place: start from a copy (x = x0.clone()).")
        got_mean, got_var = out.double().mean(0), out.double().var(0)
        mean_tol = 5 * torch.sqrt(exp_var / n) + 1e-3
        var_tol = 5 * exp_var * math.sqrt(2 / n) + 1e-3
        if not (bool(((got_mean - exp_mean).abs() <= mean_tol).all()) and bool(((got_var - exp_var).abs() <= var_tol).all())):
            msg = (f"after {n_steps} steps of size {step_size} on the target N({fmt(mean, 2)}, diag {fmt(var, 2)}) the "
                   f"chains have mean {fmt(got_mean, 3)} and variance {fmt(got_var, 3)}; the update "
                   f"x ← x + (h/2)·s(x) + √h·z gives mean {fmt(exp_mean, 3)} and variance {fmt(exp_var, 3)}. ")
            if float(got_var.max()) < 1e-8:
                msg += "The chains have no spread at all: the noise term √h·z is missing."
            elif bool(((got_var / exp_var - 2).abs() < 0.2).all()):
                msg += "The variance is twice too large: the noise should be √h·z (not √(2h)·z) with the drift (h/2)·s(x)."
            elif bool(((got_mean - _langevin_moments(mean, var, x0_point, 2 * step_size, n_steps)[0]).abs() <= mean_tol).all()):
                msg += "The chains move twice too fast: the drift is (h/2)·s(x), not h·s(x)."
            else:
                msg += "Check the drift (h/2)·s(x), the noise √h·z with z ~ N(0, I), and the number of steps."
            fail(msg)
    traj = as_tensor(call(langevin_dynamics, score, x0[:50], step_size, 7, return_trajectory=True, generator=generator(seed),
                          what="langevin_dynamics(..., return_trajectory=True)"), "trajectory")
    expect_shape(traj, (8, 50, 2), "the trajectory for n_steps=7 and 50 chains in 2-D ([n_steps + 1, n, d])")
    expect(torch.equal(traj[0], x0[:50]), "trajectory[0] should be the starting points x0.")
    last = as_tensor(call(langevin_dynamics, score, x0[:50], step_size, 7, generator=generator(seed),
                          what="langevin_dynamics(...)"), "langevin_dynamics")
    expect(max_abs_diff(traj[-1], last) < 1e-6,
           "with equally seeded generators the last point of the trajectory differs from the result without "
           "trajectory: draw all noise from `generator` and return the same chain either way.")
    _check_devices(langevin_dynamics, "langevin_dynamics(score_fn, x0, step_size, n_steps, generator=g)", (8, 2),
                   0.01, 3, generator=generator(seed))
    passed(f"langevin_dynamics: mean {fmt(got_mean, 3)} and variance {fmt(got_var, 3)} as the update predicts; "
           "trajectory [n_steps + 1, n, d]; noise on x's device")


# ---------------------------------------------------------- denoising score matching
class _RecordingOptimalScore(nn.Module):
    """The optimal noisy score −x̃/(s² + σ²) for data N(0, s²I), times a learnable scale; records its inputs."""

    def __init__(self, s2: float):
        super().__init__()
        self.s2 = s2
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.inputs = []

    def forward(self, x_noisy, sigma):
        sigma = torch.as_tensor(sigma)
        self.inputs.append((x_noisy.detach(), sigma.detach()))
        column = sigma.reshape(len(x_noisy), 1) if sigma.numel() == len(x_noisy) else sigma  # report shapes, not crash
        return -self.scale.to(x_noisy.dtype) * x_noisy / (self.s2 + column**2)


def _probe_dsm_loss(dsm_loss, model, x, sigmas, generator):
    """The loss as returned, the (x̃, σ) pairs the recording model saw, and, after a backward pass when the loss is a
    scalar with a graph, the gradient of the model's scale (None when none reached it)."""
    loss = dsm_loss(model, x, sigmas, generator=generator)
    scale_grad = None
    if isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.requires_grad:
        loss.backward()
        scale_grad = model.scale.grad
    return loss, model.inputs, scale_grad


def check_dsm_loss(dsm_loss, seed: int = 0, d: int = 2, s: float = 1.5, n: int = 40_000) -> None:
    """With data N(0, s²I) and the optimal score −x̃/(s²+σ²), E[loss] = mean over σ of d·s²/(2(s²+σ²))."""
    sigmas = torch.tensor([0.2, 0.5, 1.0, 2.0, 4.0])
    s2 = s**2
    expected = float((d * s2 / (2 * (s2 + sigmas.double() ** 2))).mean())
    x = s * torch.randn(n, d, generator=generator(seed), dtype=torch.float64)
    model = _RecordingOptimalScore(s2)
    loss, inputs, scale_grad = call(_probe_dsm_loss, dsm_loss, model, x, sigmas, generator(seed + 1),
                                    what="dsm_loss(score_model, x, sigmas, generator=g)")
    expect(isinstance(loss, torch.Tensor) and loss.numel() == 1,
           f"dsm_loss should return a scalar tensor (for loss.backward()), got {type_name(loss)}"
           + (f" of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else "") + ".")
    expect(len(inputs) >= 1, "dsm_loss never called score_model(x_noisy, sigma).")
    x_noisy = torch.cat([i[0] for i in inputs]).double()
    sigma = torch.cat([i[1].reshape(len(i[0]), -1) if i[1].numel() == len(i[0]) else i[1] for i in inputs]).double()
    expect(all(i[1].shape == (len(i[0]), 1) for i in inputs),
           f"score_model received sigma of shape {tuple(inputs[0][1].shape)}; pass one σ per sample as a tensor "
           f"of shape [B, 1] (here [{len(inputs[0][0])}, 1]).")
    expect(x_noisy.shape == (n, d), f"score_model should see every one of the {n} samples once, saw {tuple(x_noisy.shape)}.")
    levels = sigma[:, 0]
    expect(bool(torch.isclose(levels[:, None], sigmas.double()[None], rtol=1e-5).any(1).all()),
           f"the σ passed to score_model should be values from `sigmas` {fmt(sigmas, 3)}; got e.g. {fmt(levels[:5], 3)}.")
    counts = torch.isclose(levels[:, None], sigmas.double()[None], rtol=1e-5).double().mean(0)
    expect(bool(((counts - 1 / len(sigmas)).abs() < 5 * math.sqrt(0.2 * 0.8 / n) + 1e-3).all()),
           f"each σ should be drawn uniformly, one per sample; the shares of the levels are {fmt(counts, 3)}, expected "
           f"{1 / len(sigmas):.2f} each" + (" — one σ for the whole batch?" if float(counts.max()) == 1 else "."))
    z = (x_noisy - x) / sigma
    expect(abs(float(z.std()) - 1) < 0.05,
           f"(x̃ − x)/σ should be standard normal noise z; its standard deviation is {float(z.std()):.3g}. "
           "Perturb with x̃ = x + σ·z.")
    got = as_float(loss.detach(), "dsm_loss")
    if abs(got - expected) > 0.03 * expected:
        msg = f"dsm_loss with the optimal score should be about {expected:.4f} (the closed form), got {got:.4f}. "
        if abs(got - expected / d) < 0.03 * expected / d:
            msg += "You averaged over the d coordinates; sum the squares over coordinates, average over samples."
        elif abs(got - 2 * expected) < 0.06 * expected:
            msg += "Missing the ½ in ½‖σ·s(x̃, σ) + z‖²."
        else:
            msg += "With weighting λ(σ) = σ² the loss is the batch mean of ½‖σ·s(x̃, σ) + z‖² (mind the + sign)."
        fail(msg)
    expect(loss.requires_grad, "dsm_loss returned a tensor without a graph (detached, or computed under no_grad): "
                               "the optimiser cannot learn from it.")
    expect(scale_grad is not None, "no gradient reached the score model's parameters through dsm_loss.")
    _check_devices(dsm_loss, "dsm_loss(score_model, x, sigmas, generator=g)", (8, d), sigmas, generator=generator(seed))
    passed(f"dsm_loss: {got:.4f} with the optimal score, closed form {expected:.4f} (d={d}, s={s}); σ uniform per sample; "
           "σ and noise on x's device")


class _QuadraticEnergy(nn.Module):
    """f(x, σ) = ½ Σ_j (x_j − m_j)² / (σ² + c_j): its score −(x − m)/(σ² + c) is known in closed form."""

    def __init__(self, d: int):
        super().__init__()
        self.m = nn.Parameter(torch.linspace(-1, 1, d, dtype=torch.float64))
        self.c = torch.linspace(0.5, 1.5, d, dtype=torch.float64)

    def forward(self, x, sigma):
        return 0.5 * ((x - self.m) ** 2 / (sigma**2 + self.c)).sum(1)


def _probe_wrap(EnergyScore, energy):
    """EnergyScore(energy), the energy it was given, and for each of the module's parameters whether it *is* the
    energy's parameter m (handles to the first two when judged: the identity only holds in the kernel)."""
    model = EnergyScore(energy)
    return model, energy, [p is energy.m for p in model.parameters()]


def _probe_score_backward(model, energy, x, sigma):
    """model(x, sigma) as returned, x as the call left it (values and requires_grad); then, when the score has a
    graph, the gradient of its sum in the energy's m after a backward pass (None when none reached it)."""
    score = model(x, sigma)
    m_grad = None
    if isinstance(score, torch.Tensor) and score.requires_grad:
        score.sum().backward()
        m_grad = energy.m.grad
    return score, x, m_grad


def check_energy_score(EnergyScore, seed: int = 0, n: int = 16, d: int = 3) -> None:
    """``EnergyScore(f)(x, σ) = −∇ₓ f(x, σ)``, with the graph kept for training and working under ``no_grad``."""
    g = generator(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    sigma = 0.1 + torch.rand(n, 1, generator=g, dtype=torch.float64)
    energy = _QuadraticEnergy(d)
    model, wrapped, holds = call(_probe_wrap, EnergyScore, energy, what="EnergyScore(energy_model)")
    expect(is_instance(model, nn.Module), "EnergyScore should subclass torch.nn.Module.")
    expect(any(holds),
           "EnergyScore(f).parameters() does not include f's parameters: store f as an attribute of the module "
           "(self.energy_model = energy_model) so that an optimiser sees them.")
    expected = -(x - energy.m.detach()) / (sigma**2 + energy.c)
    x_copy = x.clone()
    score, x_after, m_grad = call(_probe_score_backward, model, wrapped, x, sigma, what="EnergyScore(f)(x, sigma)")
    out = as_tensor(score, "EnergyScore(f)(x, sigma)")
    expect_shape(out, (n, d), "EnergyScore(f)(x, sigma)")
    if max_abs_diff(out, expected) > 1e-8:
        if max_abs_diff(out, -expected) < 1e-8:
            fail("EnergyScore returns +∇ₓf; the score of p ∝ exp(−f) is −∇ₓf.")
        fail(f"EnergyScore(f)(x, σ) should be −∇ₓf(x, σ) = {fmt(expected[0])} for the first point, got {fmt(out[0])}.")
    expect(torch.equal(x_after, x_copy) and not x_after.requires_grad,
           "EnergyScore changed its input x; work on a copy (x.detach().requires_grad_(True)).")
    expect(isinstance(score, torch.Tensor) and score.requires_grad,
           "the score carries no graph back to f's parameters, so DSM cannot train f: call torch.autograd.grad(..., "
           "create_graph=True).")
    expected_grad = (1 / (sigma**2 + energy.c)).sum(0)
    expect(m_grad is not None and max_abs_diff(m_grad, expected_grad) < 1e-8,
           "the gradient of the score with respect to f's parameters is wrong: keep the graph (create_graph=True).")
    hint = ("under torch.no_grad() (as when sampling) EnergyScore must still differentiate f: wrap the gradient "
            "computation in torch.enable_grad().")
    try:
        with torch.no_grad():
            quiet = as_tensor(call(model, x, sigma, what="EnergyScore(f)(x, sigma) under torch.no_grad()"), "score")
    except CheckFailed as error:
        fail(f"{error} — {hint}")
    expect(max_abs_diff(quiet, expected) < 1e-8, hint)
    passed("EnergyScore: −∇ₓf, graph kept for training, works under torch.no_grad()")


# ---------------------------------------------------------- annealed Langevin
class _ShapeWatch:
    """A score function of the checks that notes the first wrong shape of the σ or t it receives ([n, 1] is right).

    What it notes, like the σ and t it records, is kept in lists: a judged call brings a recorder's lists back.
    """

    def __init__(self):
        self.bad_shapes: list[tuple] = []

    def _watch(self, x, level) -> torch.Tensor:
        level = torch.as_tensor(level)
        if level.shape != (len(x), 1) and not self.bad_shapes:
            self.bad_shapes.append(tuple(level.shape))
        return level

    @property
    def bad_shape(self):
        return self.bad_shapes[0] if self.bad_shapes else None


class _RecordingScore(_ShapeWatch):
    """The exact score of a mixture perturbed by the σ it receives; records σ and checks its shape."""

    def __init__(self, weights, means, var: float):
        self.weights, self.means, self.var = weights, means, var
        self.sigmas: list[float] = []
        super().__init__()

    def __call__(self, x, sigma):
        sigma = self._watch(x, sigma)
        value = float(sigma.reshape(-1)[0])
        self.sigmas.append(value)
        return _isotropic_score(x, self.weights, self.means, self.var + value**2)


def check_annealed_langevin(annealed_langevin, seed: int = 0, n: int = 2000, weights=(1 / 3, 1 / 3, 1 / 3),
                            descending: bool = False) -> None:
    """With the exact score of the perturbed three-Gaussian mixture the samples reproduce its weights and spreads."""
    weights = torch.tensor(weights, dtype=torch.float64)
    sigmas = geometric_sigmas(0.01, 1.0, 10)
    if descending:
        sigmas = sigmas.flip(0)
    eps, T = 2e-5, 100
    score = _RecordingScore(weights, THREE_MEANS, THREE_VAR)
    x0 = torch.randn(n, 2, generator=generator(seed))
    out = as_tensor(call(annealed_langevin, score, x0, sigmas, eps, T, generator=generator(seed + 1),
                         what="annealed_langevin(score_fn, x0, sigmas, eps, T, generator=g)"), "annealed_langevin")
    expect_shape(out, x0.shape, "annealed_langevin(...)")
    expect(out.dtype == x0.dtype, f"annealed_langevin returned {out.dtype} for {x0.dtype} x0: keep the dtype of x0.")
    expect(score.bad_shape is None, f"score_fn received sigma of shape {score.bad_shape}; pass a tensor of shape [n, 1] "
                                    "(torch.full((len(x), 1), sigma, dtype=x.dtype, device=x.device)).")
    seen = torch.tensor(score.sigmas)
    order = sigmas.sort(descending=True).values
    expected_calls = order.repeat_interleave(T)
    expect(len(seen) == len(expected_calls) and torch.allclose(seen.float(), expected_calls, rtol=1e-5),
           f"score_fn should be called T={T} times per level, from the largest σ to the smallest "
           f"({fmt(order, 3)}); it was called {len(seen)} times with σ = {fmt(seen[::T] if len(seen) >= T else seen, 3)} "
           "every T calls" + (" — start from the largest σ whatever the order of `sigmas`." if len(seen) and
                               float(seen[0]) < float(order[0]) else "."))
    spreads = torch.full((3, 2), math.sqrt(0.01 + 0.01**2), dtype=torch.float64)
    summary = _compare_samples(out, THREE_MEANS, weights, spreads, "annealed_langevin with the exact score",
                               weight_tol=0.05, spread_tol=0.2,
                               cause="Each level uses the step α = eps·σ²/σ_min² for T steps of "
                                     "x ← x + (α/2)·s(x, σ) + √α·z.")
    _check_devices(annealed_langevin, "annealed_langevin(score_fn, x0, sigmas, eps, T, generator=g)", (8, 2),
                   geometric_sigmas(0.1, 1.0, 3), 1e-3, 2, generator=generator(seed))
    passed(f"annealed_langevin with the exact score: {summary} (truth {fmt(weights, 2)}, 0.100); σ and noise on x's "
           "device")


# ---------------------------------------------------------- SDEs
def _is_scalar_like(value, n: int) -> bool:
    return not isinstance(value, torch.Tensor) or value.numel() == 1 or tuple(value.shape) in ((n, 1), (n,))


def _probe_test_sde(SDE, x, t, score):
    """reverse_drift of a test subclass of the student's SDE, made where SDE lives."""
    class Test(SDE):  # dx = −t·x dt + 2t dw: every term of reverse_drift shows
        def drift(self, x, t):
            return -t * x

        def diffusion(self, t):
            return 2 * t

    return Test().reverse_drift(x, t, score)


def check_sde_classes(SDE, OrnsteinUhlenbeck, seed: int = 0, n: int = 5) -> None:
    """``reverse_drift = drift − diffusion²·score`` on a test SDE; OU's drift −x/2 and diffusion 1."""
    g = generator(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = 0.2 + torch.rand(n, 1, generator=g, dtype=torch.float64)

    score = lambda x, t: torch.ones_like(x) * 3.0 + x  # noqa: E731 — any field will do
    out = as_tensor(call(_probe_test_sde, SDE, x, t, score, what="SDE.reverse_drift(x, t, score_fn)"), "reverse_drift")
    expected = -t * x - (2 * t) ** 2 * score(x, t)
    if max_abs_diff(out, expected) > 1e-10:
        if max_abs_diff(out, -t * x + (2 * t) ** 2 * score(x, t)) < 1e-10:
            fail("reverse_drift adds g²·score; the reverse-time drift is f(x, t) − g(t)²·∇ₓ log p_t(x) (a minus sign).")
        if max_abs_diff(out, -t * x - 2 * t * score(x, t)) < 1e-10:
            fail("reverse_drift uses g(t)·score; it is f(x, t) − g(t)²·score (the diffusion squared).")
        fail(f"reverse_drift should be drift(x, t) − diffusion(t)²·score_fn(x, t) = {fmt(expected[0])}, got {fmt(out[0])}.")
    ou = call(OrnsteinUhlenbeck, what="OrnsteinUhlenbeck()")
    expect(is_instance(ou, SDE), "OrnsteinUhlenbeck should subclass SDE.")
    for time in (t, 0.7):
        drift = as_tensor(call(ou.drift, x, time, what="OrnsteinUhlenbeck().drift(x, t)"), "drift")
        expect(max_abs_diff(drift, -0.5 * x) < 1e-12, f"OU drift should be −x/2 = {fmt(-0.5 * x[0])}, got {fmt(drift[0])}.")
        diffusion = call(ou.diffusion, time, what="OrnsteinUhlenbeck().diffusion(t)")
        expect(_is_scalar_like(diffusion, n), f"OU diffusion(t) should be a float or a tensor shaped like t, got shape "
                                              f"{tuple(getattr(diffusion, 'shape', ()))}.")
        expect(max_abs_diff(torch.as_tensor(diffusion), torch.ones(1)) < 1e-12, "OU diffusion g(t) should be 1.")
    rev = as_tensor(call(ou.reverse_drift, x, t, score, what="OrnsteinUhlenbeck().reverse_drift(x, t, score_fn)"), "reverse")
    expect(max_abs_diff(rev, -0.5 * x - score(x, t)) < 1e-10, "OU reverse_drift should be −x/2 − score(x, t).")
    passed("SDE.reverse_drift = drift − diffusion²·score; OrnsteinUhlenbeck: drift −x/2, diffusion 1")


class _TimeSDE:
    """dx = −t·x dt + t dw: drift and diffusion change with t, so a step evaluated at the wrong time shows."""

    def drift(self, x, t):
        return -t * x

    def diffusion(self, t):
        return t

    @staticmethod
    def euler_moments(x0, t0, t1, n_steps):
        """Exact mean and variance after n_steps Euler–Maruyama steps (each evaluated at its start time)."""
        dt = (t1 - t0) / n_steps
        mean, var = x0.clone(), 0.0
        for i in range(n_steps):
            t = t0 + i * dt
            mean, var = (1 - t * dt) * mean, (1 - t * dt) ** 2 * var + t**2 * dt
        return mean, var


def check_euler_maruyama_forward(euler_maruyama, OrnsteinUhlenbeck, seed: int = 0, n: int = 10_000, n_steps: int = 100) -> None:
    """Forward OU from a point: mean x₀e^{−Δt/2}, variance 1 − e^{−Δt}; on a coarse grid a time-dependent SDE
    matches the exact moments of the Euler–Maruyama recursion (time taken at the start of each step)."""
    x0_point = torch.tensor([2.0, -1.0], dtype=torch.float64)
    ou = call(OrnsteinUhlenbeck, what="OrnsteinUhlenbeck()")
    t0, t1 = 0.3, 1.8
    ou_moments = (x0_point * math.exp(-(t1 - t0) / 2), 1 - math.exp(-(t1 - t0)))
    cases = [(ou, t0, t1, n_steps, "OrnsteinUhlenbeck", ou_moments),
             (_TimeSDE(), 0.5, 1.5, 10, "dx = −t·x dt + t dw", _TimeSDE.euler_moments(x0_point, 0.5, 1.5, 10))]
    for dtype in (torch.float64, torch.float32):
        for sde, start, end, steps, name, (exp_mean, exp_var) in cases:
            x0 = x0_point.to(dtype).repeat(n, 1)
            out = as_tensor(call(euler_maruyama, sde, x0, start, end, steps, generator=generator(seed),
                                 what=f"euler_maruyama({name}, x0, {start}, {end}, {steps})"), "euler_maruyama")
            expect_shape(out, x0.shape, "euler_maruyama(...)")
            expect(out.dtype == dtype, f"euler_maruyama returned {out.dtype} for {dtype} x0: keep the dtype.")
            got_mean, got_var = out.double().mean(0), out.double().var(0)
            ok = bool(((got_mean - exp_mean).abs() < 5 * math.sqrt(exp_var / n) + 0.01).all()) and \
                bool(((got_var / exp_var - 1).abs() < 0.07).all())
            if not ok:
                msg = (f"forward {name} from x0 = {fmt(x0_point, 2)}, t = {start} → {end} in {steps} steps: mean "
                       f"{fmt(got_mean, 3)} and variance {fmt(got_var, 3)}, expected {fmt(exp_mean, 3)} and "
                       f"{float(exp_var):.3f}. ")
                if float(got_var.max()) < 1e-8:
                    msg += "No spread: the noise term g(t)·√Δt·z is missing."
                elif bool(((got_var / exp_var) > 3).all()):
                    msg += "Far too much spread: scale the noise by √Δt (z ~ N(0, Δt·I)), not by 1."
                else:
                    msg += ("Each step is x ← x + f(x, t)·Δt + g(t)·√Δt·z, with t the time at the start of the step, "
                            "going from t0 to t1 in n_steps equal steps.")
                fail(msg)
    _check_devices(euler_maruyama, "euler_maruyama(sde, x0, 0.5, 1.0, 3, generator=g)", (8, 2), 0.5, 1.0, 3,
                   generator=generator(seed))
    passed("euler_maruyama forward: OU mean x₀e^(−Δt/2) and variance 1 − e^(−Δt); time-dependent SDE right; t and "
           "noise on x's device")


class _OUScore(_ShapeWatch):
    """The exact score of an isotropic mixture carried by the OU process to time t: means e^{−t/2}μ_k,
    variance e^{−t}·var + 1 − e^{−t}."""

    def __init__(self, weights, means, var: float):
        self.weights, self.means, self.var = weights, means, var
        self.times: list[float] = []
        super().__init__()

    def marginal(self, t: float):
        """(means, variance) of the mixture at time t."""
        return math.exp(-t / 2) * self.means, math.exp(-t) * self.var + 1 - math.exp(-t)

    def __call__(self, x, t):
        t = self._watch(x, t)
        self.times.append(float(t.reshape(-1)[0]))
        means, var = self.marginal(self.times[-1])
        return _isotropic_score(x, self.weights, means, var)


def log_time_grid(t_max: float, t_min: float, n_steps: int) -> list[float]:
    """``n_steps + 1`` times from ``t_max`` down to ``t_min``, equally spaced in log scale."""
    return torch.logspace(math.log10(t_max), math.log10(t_min), n_steps + 1, dtype=torch.float64).tolist()


def _reverse_on_grid(euler_maruyama, sde, x, times, score_fn, g):
    """One Euler–Maruyama step per interval of a (log-spaced) time grid, through the student's function."""
    for t_start, t_end in zip(times[:-1], times[1:]):
        x = as_tensor(call(euler_maruyama, sde, x, t_start, t_end, 1, score_fn=score_fn, generator=g,
                           what=f"euler_maruyama(sde, x, {t_start:.3g}, {t_end:.3g}, 1, score_fn=...)"), "euler_maruyama")
    return x


def check_euler_maruyama_reverse(euler_maruyama, OrnsteinUhlenbeck, seed: int = 0, n: int = 3000,
                                 weights=(0.5, 0.3, 0.2)) -> None:
    """Reverse OU with the exact score: uniform steps from t=3 to 0.1 recover the marginal at 0.1; a log grid to
    t=10⁻³ from N(0, I) at t=5 recovers the three-Gaussian data."""
    weights = torch.tensor(weights, dtype=torch.float64)
    sde = call(OrnsteinUhlenbeck, what="OrnsteinUhlenbeck()")
    cause = ("Going backwards (t1 < t0) Δt is negative and each step is x ← x + [f − g²·score](x, t)·Δt + g·√|Δt|·z.")
    # 1. Uniform grid between two known marginals of a well-separated mixture.
    score = _OUScore(weights, WIDE_MEANS, WIDE_VAR)
    x0 = _isotropic_sample(weights, *score.marginal(3.0), n, seed).float()
    out = as_tensor(call(euler_maruyama, sde, x0, 3.0, 0.1, 300, score_fn=score, generator=generator(seed),
                         what="euler_maruyama(ou, x, 3.0, 0.1, 300, score_fn=...)"), "euler_maruyama")
    expect_shape(out, x0.shape, "euler_maruyama(...) in reverse")
    expect(out.dtype == x0.dtype, f"euler_maruyama returned {out.dtype} for {x0.dtype} x0: keep the dtype.")
    expect(score.bad_shape is None, f"score_fn received t of shape {score.bad_shape}; pass a tensor of shape [n, 1].")
    expect(len(score.times) == 300 and abs(score.times[0] - 3.0) < 1e-6 and abs(score.times[-1] - (0.1 + 2.9 / 300)) < 1e-5,
           f"going from t0=3.0 to t1=0.1 in 300 steps, score_fn should be called 300 times at t = 3.0, …, "
           f"{0.1 + 2.9 / 300:.4f} (the start of each step); got {len(score.times)} calls from t = "
           f"{score.times[0] if score.times else float('nan'):.4g} to {score.times[-1] if score.times else float('nan'):.4g}.")
    reference = _isotropic_sample(weights, *score.marginal(0.1), 20_000, seed + 2)
    ref_shares, ref_spreads = _mixture_stats(reference, math.exp(-0.05) * WIDE_MEANS)
    summary = _compare_samples(out, math.exp(-0.05) * WIDE_MEANS, ref_shares, ref_spreads,
                               "reverse OU from t=3 to t=0.1 with the exact score", weight_tol=0.04, spread_tol=0.1,
                               cause=cause)
    # 2. Log-spaced grid down to t_min = 1e-3: the data themselves.
    score = _OUScore(torch.ones(3, dtype=torch.float64) / 3, THREE_MEANS, THREE_VAR)
    g = generator(seed + 1)
    x = _reverse_on_grid(euler_maruyama, sde, torch.randn(n, 2, generator=g), log_time_grid(5.0, 1e-3, 100), score, g)
    spreads = torch.full((3, 2), 0.1, dtype=torch.float64)
    summary_data = _compare_samples(x, THREE_MEANS, torch.ones(3, dtype=torch.float64) / 3, spreads,
                                    "reverse OU on a log grid from t=5 to 1e-3 with the exact score", weight_tol=0.05,
                                    spread_tol=0.25, cause=cause)
    _check_devices(euler_maruyama, "euler_maruyama(sde, x0, 1.0, 0.5, 3, score_fn=..., generator=g)", (8, 2), 1.0, 0.5,
                   3, score_fn=_DeviceWatch(), generator=generator(seed))
    passed(f"euler_maruyama in reverse with the exact score: marginal at t=0.1 {summary}; data {summary_data}; t and "
           "noise on x's device")


# ---------------------------------------------------------- trained models
class _CheckEnergy(nn.Module):
    """The energy network the trained-model check uses: (x, log σ) → 64 → 64 → 1 with SiLU, divided by σ."""

    def __init__(self, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, x, sigma):
        return self.net(torch.cat([x, sigma.log()], dim=1))[:, 0] / sigma[:, 0]


def _probe_dsm_training(dsm_loss, model, data, sigmas, n_iters, batch_size, lr, generator):
    """Train ``model`` in place, where it lives, with ``dsm_loss``: Adam and a cosine schedule, as in the notebook."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, n_iters)
    for _ in range(n_iters):
        batch = data[torch.randint(len(data), (batch_size,), generator=generator)]
        loss = dsm_loss(model, batch, sigmas, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()


def check_trained_annealed(dsm_loss, EnergyScore, annealed_langevin, seed: int = 0) -> None:
    """Train an energy network with your ``dsm_loss`` and ``EnergyScore``, sample with your ``annealed_langevin``:
    the samples must have the data's component weights and spreads (budget sizes)."""
    sizes = budget("04")
    g = generator(seed)
    torch.manual_seed(seed)
    data = _isotropic_sample(torch.ones(3) / 3, THREE_MEANS, THREE_VAR, 10_000, seed).float()
    sigmas = geometric_sigmas(sizes.check_sigma_min, 1.0, 10)
    model = call(EnergyScore, _CheckEnergy(), what="EnergyScore(energy_net)")
    call(_probe_dsm_training, dsm_loss, model, data, sigmas, sizes.check_iters, sizes.check_batch, sizes.check_lr, g,
         what="dsm_loss(EnergyScore(net), batch, sigmas)")
    # The start points from a generator of their own: g goes on where the training left it, in the kernel when judged.
    x0 = torch.randn(sizes.check_samples, 2, generator=generator(seed + 1))
    x = as_tensor(call(annealed_langevin, model, x0, sigmas, sizes.check_eps, sizes.check_T, generator=g,
                       what="annealed_langevin(EnergyScore(net), ...)"), "annealed_langevin")
    truth = math.sqrt(0.01 + sizes.check_sigma_min**2)
    summary = _compare_samples(x, THREE_MEANS, torch.ones(3, dtype=torch.float64) / 3,
                               torch.full((3, 2), truth, dtype=torch.float64),
                               f"after {sizes.check_iters} DSM steps, annealed Langevin", weight_tol=sizes.check_weight_tol,
                               spread_tol=sizes.check_spread_tol,
                               cause="The exact-score checks above pass, so look at dsm_loss (σ per sample, weighting σ²) "
                                     "and EnergyScore (graph kept for training).")
    passed(f"trained noise-conditional model, annealed Langevin: {summary} (truth 0.33 each, {truth:.3f}; "
           f"{sizes.name} budget)")


# ---------------------------------------------------------- variance-exploding SDE, probability flow, predictor–corrector
def check_variance_exploding(VarianceExploding, SDE, seed: int = 0, n: int = 6, sigma_min: float = 0.05,
                             sigma_max: float = 3.0) -> None:
    """σ(t) = σ_min(σ_max/σ_min)^t, drift 0 and g(t)² = d[σ(t)²]/dt = 2·log(σ_max/σ_min)·σ(t)², for tensor and float t."""
    ve = call(VarianceExploding, sigma_min, sigma_max, what=f"VarianceExploding({sigma_min}, {sigma_max})")
    expect(is_instance(ve, SDE), "VarianceExploding should subclass SDE (it inherits reverse_drift).")
    g = generator(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = torch.cat([torch.tensor([[0.0], [1.0]], dtype=torch.float64), torch.rand(n - 2, 1, generator=g, dtype=torch.float64)])
    log_ratio = math.log(sigma_max / sigma_min)
    for time in (t, t.float(), 0.37):
        t64 = time.double() if isinstance(time, torch.Tensor) else torch.tensor(time, dtype=torch.float64)
        tol = 1e-5 if isinstance(time, torch.Tensor) and time.dtype == torch.float32 else 1e-8
        expected_sigma = sigma_min * torch.exp(log_ratio * t64)
        expected_sq = 2 * log_ratio * expected_sigma**2
        raw_sigma = call(ve.sigma, time, what="VarianceExploding.sigma(t)")
        _expect_dtype_of_t("sigma(t)", time, raw_sigma)
        _expect_float_for_float_t("sigma(t)", time, raw_sigma, expected_sigma)
        sigma = torch.as_tensor(raw_sigma, dtype=torch.float64)
        if not (_is_scalar_like(sigma, n) and max_abs_diff(sigma.reshape(-1) if sigma.numel() > 1 else sigma,
                                                           expected_sigma.reshape(-1)) < tol * max(1.0, float(expected_sigma.max()))):
            fail(f"sigma(t) should be σ_min·(σ_max/σ_min)^t (σ_min at t = 0, σ_max at t = 1) with the shape of t; for "
                 f"σ_min={sigma_min}, σ_max={sigma_max} expected {fmt(expected_sigma)}, got {fmt(sigma)}.")
        drift = as_tensor(call(ve.drift, x, time, what="VarianceExploding.drift(x, t)"), "drift")
        expect(drift.shape == x.shape and max_abs_diff(drift, 0 * x) == 0,
               f"the VE drift is f(x, t) = 0 with the shape of x {tuple(x.shape)}; got shape {tuple(drift.shape)}.")
        raw_g = call(ve.diffusion, time, what="VarianceExploding.diffusion(t)")
        _expect_dtype_of_t("diffusion(t)", time, raw_g)
        _expect_float_for_float_t("diffusion(t)", time, raw_g, expected_sq.sqrt())
        g_t = torch.as_tensor(raw_g, dtype=torch.float64)
        expect(_is_scalar_like(g_t, n), f"diffusion(t) should be a float or a tensor shaped like t, got {tuple(g_t.shape)}.")
        g_t = g_t.reshape(-1, 1) if g_t.numel() > 1 else g_t
        if max_abs_diff(g_t**2, expected_sq) > tol * float(expected_sq.max()):
            cause = "g(t) = σ(t)·√(2·log(σ_max/σ_min)), the square root of d[σ(t)²]/dt, so that the variance added " \
                    "between 0 and t is σ(t)² − σ_min²."
            if max_abs_diff(g_t, expected_sigma) < 1e-8:
                cause = "you returned σ(t) itself; " + cause
            elif max_abs_diff(g_t**2, log_ratio * expected_sigma) < 1e-8:
                cause = "g(t)² is d[σ(t)²]/dt, not dσ/dt; " + cause
            fail(f"diffusion(t)² should be {fmt(expected_sq)}, got {fmt(g_t**2)}: {cause}")
    score = lambda x, t: x + 1.0  # noqa: E731 — any field will do
    rev = as_tensor(call(ve.reverse_drift, x, t, score, what="VarianceExploding.reverse_drift(x, t, score_fn)"), "reverse")
    expect(max_abs_diff(rev, -2 * log_ratio * (sigma_min * torch.exp(log_ratio * t)) ** 2 * score(x, t)) < 1e-8,
           "VarianceExploding.reverse_drift should be 0 − g(t)²·score (inherit it from SDE).")
    passed("VarianceExploding: σ(t) = σ_min(σ_max/σ_min)^t, drift 0, g(t)² = 2·log(σ_max/σ_min)·σ(t)²; float t "
           "and float32/float64 tensor t")


def _expect_dtype_of_t(name: str, time, raw) -> None:
    """For a tensor t, the result is a tensor of t's dtype (float32 t, float32 σ and g: the samplers keep float32)."""
    if isinstance(time, torch.Tensor):
        expect(isinstance(raw, torch.Tensor) and raw.dtype == time.dtype,
               f"{name} for a {time.dtype} tensor t returned {raw.dtype if isinstance(raw, torch.Tensor) else type_name(raw)}: "
               "return a tensor of t's dtype (float32 t gives float32 σ and g, so that the samplers keep float32 inputs "
               "float32). Compute with Python floats and t itself (self.sigma_min * (self.sigma_max / self.sigma_min) "
               "** t), not through float64 tensors.")


def _expect_float_for_float_t(name: str, time, raw, expected: torch.Tensor) -> None:
    """For a float t, a Python float (or another float64 number). A float32 number misses the check's 1e-8 by a margin
    that changes with t, so its type is named whatever its value, before the formula is blamed."""
    if isinstance(time, torch.Tensor) or not isinstance(raw, (torch.Tensor, np.ndarray, np.generic)):
        return  # a Python number, or a type for the value checks to report
    dtype = str(raw.dtype).removeprefix("torch.")
    if dtype == "float64":
        return
    if isinstance(raw, torch.Tensor):
        kind = f"a {'0-d' if raw.dim() == 0 else tuple(raw.shape)} torch.{dtype} tensor"
    else:
        kind = f"a NumPy {dtype}"
    value = torch.as_tensor(raw, dtype=torch.float64).reshape(-1)
    fail(f"{name} for the float t = {time} returned {kind}"
         + (f", {float(value[0]):.9g} where the formula gives {float(expected.reshape(-1)[0]):.9g}" if len(value) else "")
         + f": for a float t return a Python float (a {dtype} number is rounded to about 1e-7 or coarser; the check "
           "compares at 1e-8). Compute with Python floats and math (self.sigma_min * (self.sigma_max / self.sigma_min) ** t), not "
           "through a tensor such as torch.as_tensor(t), which is float32.")


class _SigmaScore(_ShapeWatch):
    """The exact score of an isotropic mixture perturbed by σ(t)² extra variance at time t; records t and its shape."""

    def __init__(self, weights, means, var: float, sigma_of_t):
        self.weights, self.means, self.var, self.sigma_of_t = weights, means, var, sigma_of_t
        self.times: list[float] = []
        super().__init__()

    def __call__(self, x, t):
        t = self._watch(x, t)
        self.times.append(float(t.reshape(-1)[0]))
        return _isotropic_score(x, self.weights, self.means, self.var + self.sigma_of_t(self.times[-1]) ** 2)


def check_ve_reverse(euler_maruyama, VarianceExploding, seed: int = 0, n: int = 2000, weights=(1 / 3, 1 / 3, 1 / 3),
                     n_steps: int = 200) -> None:
    """Reverse VE SDE (σ 1 → 0.02) with the exact score of the perturbed mixture, through your euler_maruyama: the
    samples have the weights and spreads of the mixture perturbed by σ_min."""
    weights = torch.tensor(weights, dtype=torch.float64)
    sigma_min, sigma_max = 0.02, 1.0
    ve = call(VarianceExploding, sigma_min, sigma_max, what=f"VarianceExploding({sigma_min}, {sigma_max})")
    score = _SigmaScore(weights, THREE_MEANS, THREE_VAR, lambda t: sigma_min * (sigma_max / sigma_min) ** t)
    x0 = _isotropic_sample(weights, THREE_MEANS, THREE_VAR + sigma_max**2, n, seed).float()
    out = as_tensor(call(euler_maruyama, ve, x0, 1.0, 0.0, n_steps, score_fn=score, generator=generator(seed),
                         what=f"euler_maruyama(VarianceExploding(0.02, 1), x, 1.0, 0.0, {n_steps}, score_fn=...)"), "samples")
    expect_shape(out, x0.shape, "euler_maruyama(...) with the VE SDE")
    truth = math.sqrt(THREE_VAR + sigma_min**2)
    summary = _compare_samples(out, THREE_MEANS, weights, torch.full((3, 2), truth, dtype=torch.float64),
                               "reverse VE SDE with the exact score", weight_tol=0.05, spread_tol=0.2,
                               cause="The euler_maruyama checks pass, so look at VarianceExploding: with g(t)² = "
                                     "d[σ(t)²]/dt the reverse SDE removes exactly the noise σ(t)² − σ_min².")
    expect(out.dtype == x0.dtype, f"euler_maruyama with VarianceExploding returned {out.dtype} for {x0.dtype} x0: the "
                                  "euler_maruyama checks keep the dtype, so look at VarianceExploding: sigma(t) and "
                                  "diffusion(t) of a float32 tensor t should be float32.")
    passed(f"reverse VE SDE with the exact score: {summary} (truth {fmt(weights, 2)}, {truth:.3f})")


class _PowerSDE:
    """dx = √(2t)·dw: zero drift and p_t = p_0 ⊛ N(0, t²I), a time-dependent test SDE with marginals in closed form."""

    def drift(self, x, t):
        return torch.zeros_like(x)

    def diffusion(self, t):
        return torch.sqrt(2 * t) if isinstance(t, torch.Tensor) else math.sqrt(2 * t)

    def reverse_drift(self, x, t, score_fn):
        return self.drift(x, t) - self.diffusion(t) ** 2 * score_fn(x, t)


class _GaussianScore(_ShapeWatch):
    """The exact score of N(mean(t), var(t)·I), recording the times it is called at."""

    def __init__(self, mean_of_t, var_of_t):
        self.mean_of_t, self.var_of_t = mean_of_t, var_of_t
        self.times: list[float] = []
        super().__init__()

    def __call__(self, x, t):
        t = self._watch(x, t)
        t_now = float(t.reshape(-1)[0])
        self.times.append(t_now)
        return (-(x.double() - self.mean_of_t(t_now)) / self.var_of_t(t_now)).to(x.dtype)


def check_probability_flow_ode(probability_flow_ode, OrnsteinUhlenbeck, seed: int = 0, n: int = 2000) -> None:
    """On Gaussian data the probability-flow ODE is an exact affine map (both directions, OU and a zero-drift SDE);
    it is deterministic; with the exact score of the perturbed three-Gaussian mixture it lands on the mixture."""
    m = torch.tensor([1.0, -0.5], dtype=torch.float64)
    s2 = 0.25
    ou = call(OrnsteinUhlenbeck, what="OrnsteinUhlenbeck()")
    ou_mean = lambda t: m * math.exp(-t / 2)  # noqa: E731
    ou_var = lambda t: math.exp(-t) * s2 + 1 - math.exp(-t)  # noqa: E731
    cases = [(_PowerSDE(), "dx = √(2t) dw", lambda t: m, lambda t: s2 + t**2, 2.0, 0.1, 400),
             (_PowerSDE(), "dx = √(2t) dw", lambda t: m, lambda t: s2 + t**2, 0.1, 2.0, 400),
             (ou, "OrnsteinUhlenbeck", ou_mean, ou_var, 3.0, 0.05, 300)]
    g = generator(seed)
    for dtype in (torch.float64, torch.float32):
        for sde, name, mean_of_t, var_of_t, t0, t1, steps in cases:
            z = torch.randn(n, 2, generator=g, dtype=torch.float64)
            x0 = (mean_of_t(t0) + math.sqrt(var_of_t(t0)) * z).to(dtype)
            score = _GaussianScore(mean_of_t, var_of_t)
            what = f"probability_flow_ode({name}, x0, {t0}, {t1}, {steps}, score_fn)"
            out = as_tensor(call(probability_flow_ode, sde, x0, t0, t1, steps, score, what=what), what)
            expect_shape(out, x0.shape, what)
            expect(out.dtype == dtype, f"{what} returned {out.dtype} for {dtype} x0: keep the dtype.")
            expect(score.bad_shape is None, f"score_fn received t of shape {score.bad_shape}; pass a tensor of shape [n, 1].")
            # The exact flow scales deviations from the mean by √(var(t1)/var(t0)).
            ratio = math.sqrt(var_of_t(t1) / var_of_t(t0))
            expected = mean_of_t(t1) + (x0.double() - mean_of_t(t0)) * ratio
            expect(bool(torch.isfinite(out).all()), f"{what} returned NaN or infinite values: is the time running from t0 "
                                                    "to t1 (Δt = (t1 − t0)/n_steps, negative going backwards)?")
            err = float((out.double() - expected).norm(dim=1).max() / math.sqrt(var_of_t(t1)))
            if err > 0.05:
                dev_in, dev_out = x0.double() - mean_of_t(t0), out.double() - mean_of_t(t1)
                got = float((dev_in * dev_out).sum() / (dev_in**2).sum())
                msg = (f"{what}: the exact flow scales every deviation from the mean by √(var(t1)/var(t0)) = {ratio:.3f}; "
                       f"your points are scaled by about {got:.3f} (largest error {err:.2f} standard deviations). ")
                residual = float((dev_out - got * dev_in).norm(dim=1).mean() / math.sqrt(var_of_t(t1)))
                if residual > 0.1:
                    msg += "The result is not a deterministic function of x0: the probability-flow ODE has no noise term."
                elif abs(got - ratio**2) < 0.05 * ratio**2:
                    msg += "That is the square of the right factor: the ODE's drift is f − ½·g²·score (the ½ is missing)."
                elif abs(got - 1 / ratio) < 0.05 / ratio:
                    msg += "That is the inverse of the right factor: a sign error, or the time running the wrong way."
                else:
                    msg += ("Each of the n_steps equal steps is x ← x + [f(x, t) − ½·g(t)²·score_fn(x, t)]·Δt, with "
                            "Δt = (t1 − t0)/n_steps (negative going backwards) and t the time at the start of the step.")
                fail(msg)
    again = as_tensor(call(probability_flow_ode, sde, x0, t0, t1, steps, score, what=what), what)
    expect(torch.equal(again, out), "two calls of probability_flow_ode with the same arguments differ: it must be "
                                    "deterministic (no random numbers at all).")
    # The three-Gaussian mixture: from σ = 1 (one bump) to σ = 0.02 with its exact score.
    weights = torch.ones(3, dtype=torch.float64) / 3
    score = _SigmaScore(weights, THREE_MEANS, THREE_VAR, lambda t: t)
    x0 = _isotropic_sample(weights, THREE_MEANS, THREE_VAR + 1.0, n, seed).float()
    out = as_tensor(call(probability_flow_ode, _PowerSDE(), x0, 1.0, 0.02, 200, score,
                         what="probability_flow_ode(dx = √(2t) dw, x0, 1.0, 0.02, 200, score_fn)"), "probability_flow_ode")
    truth = math.sqrt(THREE_VAR + 0.02**2)
    summary = _compare_samples(out, THREE_MEANS, weights, torch.full((3, 2), truth, dtype=torch.float64),
                               "probability-flow ODE with the exact score", weight_tol=0.05, spread_tol=0.2,
                               cause="Each step is x ← x + [f − ½·g²·score](x, t)·Δt.")
    _check_devices(probability_flow_ode, "probability_flow_ode(sde, x0, 1.0, 0.5, 3, score_fn)", (8, 2), 1.0, 0.5, 3,
                   _DeviceWatch())
    passed(f"probability_flow_ode: exact Gaussian flow (OU and zero-drift SDE, both directions), deterministic; "
           f"mixture {summary}; t on x's device")


GAUSS_POINTS = 10_000  # chains of the predictor–corrector check on Gaussian data (see there)


def check_predictor_corrector(predictor_corrector, seed: int = 0, n: int = 2000) -> None:
    """Reverse-SDE predictor with Langevin correctors: score calls per step, the mixture's weights and spreads with the
    exact score, and on Gaussian data a coarse grid whose correctors must restore the right variance."""
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    sde = _PowerSDE()
    g = generator(seed)
    # 1. Mixture, one corrector per step: number and shape of the score calls, weights and spreads.
    score = _SigmaScore(weights, THREE_MEANS, THREE_VAR, lambda t: t)
    x0 = _isotropic_sample(weights, THREE_MEANS, THREE_VAR + 1.0, n, seed).float()
    what = "predictor_corrector(sde, x0, 1.0, 0.02, 100, score_fn, snr=0.16, n_corrector=1, generator=g)"
    out = as_tensor(call_unchanged(predictor_corrector, sde, x0, 1.0, 0.02, 100, score, snr=0.16, n_corrector=1,
                                   generator=g, what=what), what)
    expect_shape(out, x0.shape, what)
    expect(out.dtype == x0.dtype, f"predictor_corrector returned {out.dtype} for {x0.dtype} x0: keep the dtype.")
    expect(score.bad_shape is None, f"score_fn received t of shape {score.bad_shape}; pass a tensor of shape [n, 1].")
    times = torch.tensor(score.times)
    expect(len(times) == 200 and bool(((times >= 0.02 - 1e-6) & (times <= 1.0 + 1e-6)).all()),
           f"{what} should call score_fn 200 times (one predictor and one corrector evaluation per step), at times "
           f"between t1 and t0; it made {len(times)} calls" + (f" between t = {float(times.min()):.3g} and "
                                                                f"{float(times.max()):.3g}." if len(times) else "."))
    truth = math.sqrt(THREE_VAR + 0.02**2)
    summary = _compare_samples(out, THREE_MEANS, weights, torch.full((3, 2), truth, dtype=torch.float64),
                               "predictor–corrector with the exact score", weight_tol=0.05, spread_tol=0.2,
                               cause="Predictor: x ← x + [f − g²·score](x, t)·Δt + g(t)·√|Δt|·z; corrector: "
                                     "x ← x + ε·score + √(2ε)·z with ε = 2·(snr·‖z‖/‖score‖)².")
    # 2. Gaussian data on a coarse grid, many correctors: the Langevin corrector must hold N(m, s² + t1²).
    m = torch.tensor([1.0, -0.5], dtype=torch.float64)
    s2, t1 = 0.25, 0.1
    gauss = _GaussianScore(lambda t: m, lambda t: s2 + t**2)
    # A generator of its own: g goes on where part 1 left it, in the kernel when judged. GAUSS_POINTS points know the
    # variance to ±1.4 % (one standard error): with 2 000 the 8 % tolerance was 2.5 errors and failed on seeds.
    x0 = m + math.sqrt(s2 + 4.0) * torch.randn(GAUSS_POINTS, 2, generator=generator(seed + 1), dtype=torch.float64)
    what = "predictor_corrector(sde, x0, 2.0, 0.1, 5, score_fn, snr=0.1, n_corrector=200, generator=g)"
    out = as_tensor(call(predictor_corrector, sde, x0, 2.0, t1, 5, gauss, snr=0.1, n_corrector=200, generator=g,
                         what=what), what)
    expect(len(gauss.times) == 5 * 201, f"{what} should call score_fn 5·(1 + 200) = 1005 times, made {len(gauss.times)}.")
    expect(out.dtype == torch.float64, f"predictor_corrector returned {out.dtype} for float64 x0: keep the dtype.")
    var = out.double().var(0)
    expected_var = s2 + t1**2
    mean_ok = bool(((out.double().mean(0) - m).abs() < 5 * math.sqrt(expected_var / GAUSS_POINTS)).all())
    if not (mean_ok and bool(((var / expected_var - 1).abs() < 0.08).all())):
        msg = (f"{what} on data N({fmt(m, 2)}, {s2}·I): variance {fmt(var, 3)} and mean {fmt(out.double().mean(0), 3)}, "
               f"expected {expected_var:.3f} and {fmt(m, 2)}; 200 Langevin corrector steps at each time should bring the "
               "samples to p_t whatever the coarse predictor did. ")
        if float(var.max()) < 0.5 * expected_var:
            msg += "Too little spread: does the corrector add √(2ε)·z?"
        elif not bool(torch.isfinite(var).all()) or float(var.min()) > 2 * expected_var:
            msg += "Too much spread: the corrector step is x ← x + ε·score + √(2ε)·z (a plus sign before ε·score)."
        else:
            msg += "The corrector is x ← x + ε·score_fn(x, t) + √(2ε)·z with ε = 2·(snr·‖z‖/‖score‖)², at the step's new time."
        fail(msg)
    _check_devices(predictor_corrector, "predictor_corrector(sde, x0, 1.0, 0.5, 2, score_fn, n_corrector=2, generator=g)",
                   (8, 2), 1.0, 0.5, 2, _DeviceWatch(), n_corrector=2, generator=generator(seed))
    passed(f"predictor_corrector: {summary}; correctors hold the Gaussian marginal (variance {fmt(var, 3)}, "
           f"truth {expected_var:.3f}); x0 untouched; t and noise on x's device")


# ---------------------------------------------------------- the student's energy network (a diagnostic, not graded)
def _probe_energy_net(net, x, small, large):
    """net(x, small) as returned; when it is one energy per point, also the largest |∂²f/∂x₀²| summed over the batch
    (None when f is not twice differentiable in x), the gradients in x at both levels and net(x, large)."""
    with torch.enable_grad():
        x = x.clone().requires_grad_(True)
        out = net(x, small)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(x),):
            return out, None
        (grad_small,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        (second,) = torch.autograd.grad(grad_small[:, 0].sum(), x, allow_unused=True)
        (grad_large,) = torch.autograd.grad(net(x, large).sum(), x)
        return out, {"second": None if second is None else float(second.abs().max()), "grad_small": grad_small.detach(),
                     "grad_large": grad_large, "f_large": net(x, large).detach()}


def diagnose_energy_net(EnergyNet, final_loss: float | None = None, exact_loss: float | None = None) -> list[str]:
    """Probe fresh ``EnergyNet()`` instances for the three properties DSM on this data needs, and print what they
    mean for the figures. Returns the problems found (empty when none); never raises on a poor network."""
    problems = []
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = call(EnergyNet, what="EnergyNet()").double()
    x = torch.rand(256, 2, generator=generator(0), dtype=torch.float64)
    small, large = torch.full((256, 1), 0.02, dtype=torch.float64), torch.ones(256, 1, dtype=torch.float64)
    out, seen = call(_probe_energy_net, net, x, small, large, what="EnergyNet()(x [256, 2], sigma [256, 1])")
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (256,) or seen is None:
        problems.append(f"EnergyNet returns shape {tuple(getattr(out, 'shape', ()))}; it must return one energy "
                        "per point, [B] (take [:, 0] of the last layer's output).")
    else:
        if seen["second"] is None or seen["second"] < 1e-12:
            problems.append("its second derivatives in x are zero: a piecewise-linear activation (ReLU, LeakyReLU, "
                            "Hardtanh) makes the score piecewise constant and discontinuous, unable to fit smooth "
                            "fields like −x/σ². Use SiLU, ELU or Softplus.")
        f_small, f_large = out.detach(), seen["f_large"]
        # Dividing by σ alone is not conditioning: σ·f must still change with σ.
        if max_abs_diff(f_small, f_large) < 1e-8 or max_abs_diff(0.02 * f_small, f_large) < 1e-8:
            problems.append("its output does not depend on σ (beyond a fixed 1/σ scale): stack the noise level (as "
                            "log σ) with x in the input.")
        else:
            grad_small, grad_large = seen["grad_small"], seen["grad_large"]
            ratio = float(grad_small.norm(dim=1).mean() / grad_large.norm(dim=1).mean().clamp_min(1e-30))
            if ratio < 5:
                problems.append(f"at initialisation its score at σ = 0.02 is only {ratio:.1f}× that at σ = 1, while the "
                                "true score grows like 1/σ (about 50×): divide the output by σ so that the network "
                                "itself stays of order one at every level.")
    gap = None if final_loss is None or exact_loss is None else float(final_loss) - float(exact_loss)
    if problems:
        print("⚠ EnergyNet is the likely cause of poor Figures 3–4: " + " ".join(f"({i + 1}) {p}" for i, p in enumerate(problems)))
    elif gap is not None and gap > 0.05:
        print(f"⚠ the DSM loss ends {gap:.3f} above the exact score's: train longer (full budget) or widen EnergyNet.")
    else:
        print("✔ EnergyNet: smooth in x, conditioned on σ, score scaled like 1/σ"
              + (f"; final DSM loss {gap:+.3f} from the exact score's" if gap is not None else ""))
    return problems
