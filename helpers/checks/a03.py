"""Checks of assignment 03: energy-based models in 2-D and on MNIST.

Langevin samplers are checked against the exact law of the discretised chain
on a Gaussian energy (after ``n`` steps its mean and variance have closed
forms), training loops against closed-form maximum-likelihood answers or
against what stays stable across seeds (the figures measured over seeds are
noted next to each threshold; docs/contract.md states what every check
compares), and the MNIST model by how it ranks real digits against noise.

When grading, the student's objects are handles to a separate kernel and
results come back as plain data without a graph (helpers/bridge.py). So what
needs autograd through the student's output (a loss's gradients, an energy's
gradient in x) is measured by a small module-level probe (``_probe_*``) run
through ``call``, where the graph lives; it returns raw numbers and tensors,
and every comparison, tolerance and message stays in the check.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from ..budgets import budget
from ..data import load_mnist
from .common import (as_float, as_tensor, call, call_unchanged, expect, expect_shape, fail, fmt, generator, is_instance,
                     max_abs_diff, passed, silenced, type_name)

MODES = ((2.5, 2.5), (-2.5, -2.5))  # the two unit Gaussians of the 2-D data
MNIST_MIN_AUROC = 0.99  # measured: 1.000 on every seed after the check's training
MNIST_MIN_GAP = 0.1     # mean energy of noise minus that of digits: 1.8 after the check's training, |gap| ~0.001 untrained


@contextlib.contextmanager
def one_thread():
    """Train the checks' small models on one CPU thread, then restore the setting.

    Their operations are too small to gain from several threads, and on a busy machine (a grading server)
    the threads' synchronisation made the checks 4–6 times slower (measured on 2 shared cores).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------- energies
class GaussianEnergy(torch.nn.Module):
    """E(x) = Σ (x − μ)² / (2σ²) over every non-batch axis; its Langevin chain has a closed-form law."""

    def __init__(self, mu, sigma):
        super().__init__()
        self.register_buffer("mu", torch.as_tensor(mu, dtype=torch.float64))
        self.register_buffer("sigma", torch.as_tensor(sigma, dtype=torch.float64))

    def forward(self, x):
        z = (x - self.mu.to(x.dtype)) / self.sigma.to(x.dtype)
        return 0.5 * (z**2).flatten(1).sum(1)


class LearnableGaussian(torch.nn.Module):
    """E(x) = ‖x − c‖² / (2s²) with trainable c and log s: maximum likelihood puts c at the data mean, s² at its variance."""

    def __init__(self, d: int = 2):
        super().__init__()
        self.centre = torch.nn.Parameter(torch.zeros(d))
        self.log_scale = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return 0.5 * ((x - self.centre) ** 2).sum(1) / torch.exp(2 * self.log_scale)


class SmallEnergyMLP(torch.nn.Module):
    """The 2-10-10-1 ReLU energy of the original exercise; [B, 2] -> [B]."""

    def __init__(self, hidden: int = 10):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                                       torch.nn.ReLU(), torch.nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)


def two_gaussians(n: int, g: torch.Generator) -> torch.Tensor:
    """n points from the equal mixture of N((2.5, 2.5), I) and N((-2.5, -2.5), I)."""
    signs = torch.where(torch.rand(n, generator=g) < 0.5, 1.0, -1.0)
    return torch.randn(n, 2, generator=g) + 2.5 * signs[:, None]


# -------------------------------------------------------------- sgld_sample
def _chain_law(x0, mu, sigma, step, noise_std, n_steps):
    """Mean and variance after n steps of x ← x − step·(x − μ)/σ² + noise_std·ξ from the point x0."""
    a = 1 - step / sigma**2
    mean = mu + a**n_steps * (x0 - mu)
    var = noise_std**2 * (1 - a ** (2 * n_steps)) / (1 - a**2)
    return mean, var


def _run_sampler(sgld_sample, energy, x0, what, **kwargs):
    out = call_unchanged(sgld_sample, energy, x0, what=what, **kwargs)
    out = out if isinstance(out, torch.Tensor) else as_tensor(out, what)
    expect(not out.requires_grad, f"{what} returns a tensor that still requires grad: return x.detach().")
    out = as_tensor(out, what)
    expect_shape(out, x0.shape, what)
    expect(out.dtype == x0.dtype, f"{what} returned {out.dtype} for a {x0.dtype} input: keep the input dtype.")
    expect(bool(torch.isfinite(out).all()), f"{what} returned NaN or inf: is the step taken *against* the gradient "
                                            "(x − step_size·∇E)?")
    return out.to(torch.float64)


def _deterministic_steps(sgld_sample, seed):
    """With noise_std=0 the sampler is plain gradient descent: x_n = μ + (1 − h/σ²)ⁿ (x0 − μ), exactly."""
    mu, sigma = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    x0 = torch.randn(6, 3, generator=generator(seed), dtype=torch.float64) * 3
    step, n_steps = 0.05, 7
    out = _run_sampler(sgld_sample, GaussianEnergy(mu, sigma), x0, "sgld_sample(..., noise_std=0)", n_steps=n_steps,
                       step_size=step, noise_std=0.0)
    expected, _ = _chain_law(x0, mu, sigma, step, 0.0, n_steps)
    if max_abs_diff(out, expected) < 1e-8:
        return
    if max_abs_diff(out, _chain_law(x0, mu, sigma, -step, 0.0, n_steps)[0]) < 1e-6:
        fail("sgld_sample moves *up* the energy: the step is x − step_size·∇ₓE(x) (minus sign).")
    if max_abs_diff(out, _chain_law(x0, mu, sigma, step / 2, 0.0, n_steps)[0]) < 1e-6:
        fail("sgld_sample takes half a gradient step: the update of this assignment is x − step_size·∇ₓE(x) "
             "(the ε/2 form of assignment 04 uses ε = 2·step_size).")
    if max_abs_diff(out, x0) < 1e-12:
        fail("sgld_sample returned x0 unchanged with noise_std=0: does it run n_steps gradient steps?")
    spread = float((out - expected).std())
    if spread > 1e-3:
        fail("with noise_std=0 sgld_sample should be deterministic gradient descent, but the result looks random: "
             "use the noise_std you are given, and the default sqrt(2·step_size) only when it `is None` "
             "(0 is a valid noise level, and `noise_std or …` overrides it).")
    fail(f"with noise_std=0, {n_steps} steps of size {step} from x0 should give {fmt(expected[0])} (first chain), "
         f"got {fmt(out[0])}: each step is x − step_size·∇ₓE(x).")


def _stochastic_law(sgld_sample, seed, n, dtype, noise_std):
    """Sample mean and variance of many chains against the exact law of the discretised chain."""
    mu, sigma = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    x0 = torch.full((n, 3), 2.0, dtype=dtype)
    step, n_steps = 0.05, 150
    torch.manual_seed(seed)
    kwargs = {} if noise_std is None else {"noise_std": noise_std}
    label = f"sgld_sample on a Gaussian energy ({dtype}, noise_std={noise_std})"
    out = _run_sampler(sgld_sample, GaussianEnergy(mu, sigma), x0, label, n_steps=n_steps, step_size=step, **kwargs)
    s = math.sqrt(2 * step) if noise_std is None else noise_std
    mean, var = _chain_law(x0[0].double(), mu, sigma, step, s, n_steps)
    got_mean, got_var = out.mean(0), out.var(0)
    # Six standard errors: a correct sampler essentially never misses, a wrong noise scale (variance × ½ or × 2) always does.
    mean_ok = ((got_mean - mean).abs() <= 6 * (var / n).sqrt()).all()
    var_ok = ((got_var / var - 1).abs() <= 6 * math.sqrt(2 / n)).all()
    if mean_ok and var_ok:
        return
    if not mean_ok:
        fail(f"{label}: after {n_steps} steps the chains' mean should be {fmt(mean)}, got {fmt(got_mean)}. "
             "The step is x − step_size·∇ₓE(x) + noise_std·ξ with ξ ~ N(0, I).")
    ratio = got_var / var
    if float(ratio.max()) < 0.05:
        fail(f"{label}: the chains have almost no spread (variance {fmt(got_var)}, expected {fmt(var)}): "
             "the noise term noise_std·ξ is missing.")
    if ((ratio - 0.5).abs() < 0.15).all():
        fail(f"{label}: the variance is half the expected {fmt(var)} (got {fmt(got_var)}): the default noise is "
             "sqrt(2·step_size), not sqrt(step_size).")
    if noise_std is not None and ((got_var / _chain_law(x0[0].double(), mu, sigma, step, math.sqrt(2 * step), n_steps)[1]
                                   - 1).abs() < 0.15).all():
        fail(f"{label}: the chains ignore noise_std={noise_std} and use the default sqrt(2·step_size).")
    fail(f"{label}: after {n_steps} steps the chains' variance should be {fmt(var)}, got {fmt(got_var)}: "
         "check the noise scale (noise_std, default sqrt(2·step_size)) and that fresh noise is drawn at every step.")


def _clamp_each_step(sgld_sample, seed):
    """Clipping after every step changes the path: from 3, clip to 1, then 4 shrinking steps give 0.9⁴."""
    x0 = torch.full((4, 1, 2, 2), 3.0)
    energy = GaussianEnergy(0.0, 1.0)
    out = _run_sampler(sgld_sample, energy, x0, "sgld_sample(..., noise_std=0, clamp=(-1, 1))", n_steps=5,
                       step_size=0.1, noise_std=0.0, clamp=(-1.0, 1.0))
    expected = 0.9**4
    if max_abs_diff(out, torch.full_like(out, expected)) < 1e-5:
        torch.manual_seed(seed)
        noisy = _run_sampler(sgld_sample, energy, torch.rand(500, 1, 2, 2) * 2 - 1, "sgld_sample(..., clamp=(-0.5, 0.5))",
                             n_steps=5, step_size=0.5, clamp=(-0.5, 0.5))
        expect(float(noisy.min()) >= -0.5 and float(noisy.max()) <= 0.5,
               f"with clamp=(-0.5, 0.5) the samples range over [{float(noisy.min()):.3g}, {float(noisy.max()):.3g}]: "
               "clip after the noise is added.")
        return
    if max_abs_diff(out, torch.ones_like(out)) < 1e-5:
        fail("sgld_sample clamps only once, at the end: clip after *every* step (the chain then keeps moving inside "
             f"the box; expected {expected:.4f} here, got 1).")
    if float(out.max()) > 1 + 1e-6:
        fail(f"sgld_sample ignores clamp=(-1, 1): values up to {float(out.max()):.3g}.")
    fail(f"with noise_std=0 and clamp=(-1, 1), 5 steps of size 0.1 on E = ‖x‖²/2 from 3 should give {expected:.4f} "
         f"(clip to 1 after the first step, then shrink by 0.9 four times); got {fmt(out.flatten())}.")


@one_thread()
def check_sgld_sample(sgld_sample, seed: int = 0, n: int = 4000) -> None:
    """Exact gradient steps without noise, the exact law of the chain with noise (default and given
    ``noise_std``, float32 and float64), clipping after each step, detached output of the input's shape."""
    _deterministic_steps(sgld_sample, seed)
    _stochastic_law(sgld_sample, seed, n, torch.float64, None)
    _stochastic_law(sgld_sample, seed + 1, n, torch.float32, None)
    _stochastic_law(sgld_sample, seed + 2, n, torch.float64, 0.2)
    _clamp_each_step(sgld_sample, seed)
    passed(f"sgld_sample: exact steps, the right mean and variance after 150 steps ({n} chains), noise_std and clamp honoured")


# ----------------------------------------------------------- initial_chains
def _chains(initial_chains, strategy, n, data, what=None, **kwargs):
    what = what or f"initial_chains({strategy!r}, {n}, data)"
    out = as_tensor(call(initial_chains, strategy, n, data, what=what, **kwargs), what)
    expect_shape(out, (n, *data.shape[1:]), what)
    expect(out.dtype == data.dtype, f"{what} returned {out.dtype} for {data.dtype} data: keep the data's dtype.")
    return out


def _expect_normal(out, scale, what):
    n = out.numel()
    mean, std = float(out.mean()), float(out.std())
    expect(abs(mean) < 6 * scale / math.sqrt(n) and abs(std / scale - 1) < 6 / math.sqrt(2 * n) + 1e-3,
           f"{what} should be noise_scale·N(0, I) with noise_scale={scale}: got mean {mean:.3g} and std {std:.3g} "
           f"(expected 0 and {scale})" + (" — torch.rand is uniform; use torch.randn." if abs(mean - scale / 2) < 0.1 * scale
                                          else "."))


def _expect_reproducible(initial_chains, strategy, n, data, seed, **kwargs):
    first = _chains(initial_chains, strategy, n, data, generator=generator(seed), **kwargs)
    torch.manual_seed(seed + 12345)  # a different global state must not matter
    second = _chains(initial_chains, strategy, n, data, generator=generator(seed), **kwargs)
    expect(torch.equal(first, second), f"initial_chains({strategy!r}, ...) gives different results for two generators "
                                       "with the same seed: pass generator=generator to torch.randn / torch.randint.")


def check_initial_chains(initial_chains, seed: int = 0, n: int = 4000, m: int = 40) -> None:
    """Noise of the right scale, rows of the data drawn with replacement, persistent chains carried over."""
    g = generator(seed)
    for dtype in (torch.float64, torch.float32):
        data = (torch.randn(m, 2, generator=g, dtype=torch.float64) + 10).to(dtype)
        for scale in (5.0, 2.0):
            kwargs = {} if scale == 5.0 else {"noise_scale": scale}
            _expect_normal(_chains(initial_chains, "noise", n, data, generator=generator(seed), **kwargs), scale,
                           f"initial_chains('noise', ..., noise_scale={scale})")
            _expect_normal(_chains(initial_chains, "persistent", n, data, previous=None, generator=generator(seed), **kwargs),
                           scale, "initial_chains('persistent', ..., previous=None) (the first chains are noise)")
        previous = torch.randn(n, 2, generator=g, dtype=dtype)
        carried = _chains(initial_chains, "persistent", n, data, previous=previous.clone(), generator=generator(seed))
        expect(torch.equal(carried, previous), "initial_chains('persistent', ..., previous=x) should return x (the "
                                               "chains continue from where the last iteration left them).")
        try:
            drawn = _chains(initial_chains, "data", n, data, generator=generator(seed))
        except AssertionError as error:
            if "not be greater" in str(error) or "randperm" in str(error) or "shape" in str(error):
                fail(f"initial_chains('data', {n}, data) with only {m} data rows failed ({error}): draw row indices "
                     "*with* replacement (torch.randint), not a permutation or the first n rows.")
            raise
        distance = torch.cdist(drawn.double(), data.double()).min(1).values
        expect(float(distance.max()) < 1e-6, "initial_chains('data', ...) should return rows of the data itself, "
                                             f"but some rows are {float(distance.max()):.3g} away from every data point.")
        counts = torch.bincount(torch.cdist(drawn.double(), data.double()).argmin(1), minlength=m).double()
        expected = n / m
        expect(float((counts - expected).abs().max()) < 6 * math.sqrt(expected),
               f"initial_chains('data', ...) should draw rows uniformly at random: row counts range from "
               f"{int(counts.min())} to {int(counts.max())}, expected about {expected:.0f} each.")
    images = torch.rand(m, 1, 3, 3, generator=g)
    _chains(initial_chains, "noise", 7, images, generator=generator(seed))
    _chains(initial_chains, "data", 7, images, generator=generator(seed))
    for strategy in ("noise", "data"):
        _expect_reproducible(initial_chains, strategy, 50, images, seed)
    passed("initial_chains: noise_scale·N(0, I), data rows drawn with replacement, persistent chains carried over")


# ------------------------------------------------------------------ ebm_loss
class _FixedEnergy(torch.nn.Module):
    """A small network with seeded weights: any correct loss gives the same value and parameter gradients."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()

    def forward(self, x):
        return self.net(x).squeeze(-1)


def _probe_ebm_loss(ebm_loss, energy, x_data, x_model, **kwargs):
    """The loss as returned and, when it is a scalar with a graph, its gradients in the energy's parameters (None
    for a parameter it does not reach). Runs where the loss's graph is: in the student's kernel when judged."""
    loss = ebm_loss(energy, x_data, x_model, **kwargs)
    grads = None
    if isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.requires_grad:
        grads = list(torch.autograd.grad(loss, list(energy.parameters()), allow_unused=True))
    return loss, grads


def check_ebm_loss(ebm_loss, seed: int = 0, n_data: int = 7, n_model: int = 5) -> None:
    """The value and parameter gradients of mean E(data) − mean E(model) + α·(mean E(data)² + mean E(model)²)."""
    g = generator(seed)
    x_data = torch.randn(n_data, 3, generator=g, dtype=torch.float64)
    x_model = 2 * torch.randn(n_model, 3, generator=g, dtype=torch.float64) + 1
    for alpha in (None, 0.0, 0.3):
        energy = _FixedEnergy(seed)
        e_d, e_m = energy(x_data), energy(x_model)
        a = 0.0 if alpha is None else alpha
        expected = e_d.mean() - e_m.mean() + a * ((e_d**2).mean() + (e_m**2).mean())
        expected_grads = torch.autograd.grad(expected, list(energy.parameters()))
        e_d, e_m, expected = e_d.detach(), e_m.detach(), expected.detach()
        kwargs = {} if alpha is None else {"alpha": alpha}
        what = f"ebm_loss(energy, x_data, x_model{'' if alpha is None else f', alpha={alpha}'})"
        loss, got_grads = call(_probe_ebm_loss, ebm_loss, energy, x_data.clone(), x_model.clone(), what=what, **kwargs)
        expect(isinstance(loss, torch.Tensor) and loss.numel() == 1,
               f"{what} should return a scalar tensor (so that loss.backward() works), got {type_name(loss)}"
               + (f" of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else "") + ".")
        got = float(loss.detach())
        if abs(got - float(expected)) > 1e-8 * max(1.0, abs(float(expected))):
            candidates = {
                "the sign is flipped: the loss is mean E(data) − mean E(samples) (lower the data's energy)":
                    e_m.mean() - e_d.mean() + a * ((e_d**2).mean() + (e_m**2).mean()),
                "alpha is ignored": e_d.mean() - e_m.mean(),
                "the regulariser squares the *mean* energies; it is the mean of the squared energies":
                    e_d.mean() - e_m.mean() + a * (e_d.mean() ** 2 + e_m.mean() ** 2),
                "the regulariser is the mean over both sets pooled; it is mean(E(x_data)²) + mean(E(x_model)²)":
                    e_d.mean() - e_m.mean() + a * (torch.cat([e_d, e_m]) ** 2).mean(),
                "energies are summed, not averaged": e_d.sum() - e_m.sum() + a * ((e_d**2).sum() + (e_m**2).sum()),
            }
            for cause, value in candidates.items():
                if abs(got - float(value)) < 1e-8 * max(1.0, abs(float(value))) and abs(float(value) - float(expected)) > 1e-8:
                    fail(f"{what} returned {got:.6g}, expected {float(expected):.6g}: {cause}.")
            fail(f"{what} returned {got:.6g}, expected mean E(x_data) − mean E(x_model) + alpha·(mean E(x_data)² + "
                 f"mean E(x_model)²) = {float(expected):.6g}.")
        expect(loss.requires_grad, f"{what} is detached from the network (did you call .item() or .detach()?): "
                                   "the optimiser needs its gradient.")
        for p_got, p_expected in zip(got_grads, expected_grads):
            expect(p_got is not None and max_abs_diff(p_got, p_expected) < 1e-8,
                   f"{what} has the right value but the wrong gradient with respect to the network's parameters: "
                   "do not detach either energy term (only the samples themselves are detached).")
    passed("ebm_loss: value and gradients exact, with and without alpha")


# ----------------------------------------------------------------- train_ebm
def _train(train_ebm, energy, data, what, **kwargs):
    result = call(train_ebm, energy, data, what=what, **kwargs)
    expect(isinstance(result, dict) and {"loss", "samples"} <= set(result),
           f"{what} should return a dict with 'loss' (one float per iteration) and 'samples' (the final chains).")
    losses = [as_float(v, "an entry of result['loss']") for v in result["loss"]]
    expect(len(losses) == kwargs["n_iters"],
           f"{what}: result['loss'] has {len(losses)} entries, expected one per iteration ({kwargs['n_iters']}).")
    expect(all(math.isfinite(v) for v in losses), f"{what}: the loss history contains NaN or inf.")
    samples = as_tensor(result["samples"], "result['samples']").to(torch.float64)
    expect_shape(samples, data.shape, f"{what}: result['samples'] (one chain per data point)")
    return losses, samples


@one_thread()
def check_train_ebm(train_ebm, seed: int = 0, n: int = 400) -> None:
    """Initialisations honoured, persistent chains carried across iterations, ``lr`` used, and on a Gaussian
    energy with a trainable centre and scale, training finds the maximum-likelihood answer (data mean and std)."""
    g = generator(seed)
    data = torch.randn(n, 2, generator=g) * 2 + torch.tensor([3.0, -1.0])
    frozen = LearnableGaussian()
    with torch.no_grad():
        frozen.centre.copy_(torch.tensor([3.0, -1.0]))
        frozen.log_scale.fill_(math.log(2.0))
    state = {k: v.clone() for k, v in frozen.state_dict().items()}

    torch.manual_seed(seed)
    _, samples = _train(train_ebm, frozen, data, "train_ebm(..., chain_length=0, init='data')", n_iters=3,
                        chain_length=0, init="data", step_size=0.1, lr=0.0, generator=generator(seed))
    expect(float(torch.cdist(samples, data.double()).min(1).values.max()) < 1e-5,
           "with init='data' and chain_length=0 the final chains should be rows of the data: start each iteration's "
           "chains with initial_chains(init, len(data), data, ...).")
    _, samples = _train(train_ebm, frozen, data, "train_ebm(..., chain_length=0, init='noise')", n_iters=2,
                        chain_length=0, init="noise", step_size=0.1, lr=0.0, generator=generator(seed))
    expect(abs(float(samples.std()) - 5.0) < 0.6, f"with init='noise' and chain_length=0 the chains should be "
           f"5·N(0, I) noise (initial_chains' default noise_scale), but their std is {float(samples.std()):.3g}.")
    expect(all(torch.equal(v, state[k]) for k, v in frozen.state_dict().items()),
           "train_ebm(..., lr=0.0) changed the energy's parameters: use the lr argument for the optimiser.")

    # lr=0 freezes the energy, so 20 persistent iterations of 5 steps are one chain of 100 steps; fresh noise
    # every iteration (5 steps from std 5) would still have a std near 3.
    torch.manual_seed(seed)
    _, samples = _train(train_ebm, frozen, data, "train_ebm(..., init='persistent', lr=0.0)", n_iters=20,
                        chain_length=5, init="persistent", step_size=0.2, lr=0.0, generator=generator(seed))
    std = float(samples.std(0).mean())
    expect(abs(std - 2.0) < 0.5, f"with init='persistent' and a frozen energy (lr=0) of std 2, 20 iterations × 5 steps "
           f"should behave as one 100-step chain with std near 2; got std {std:.3g}. Pass the previous iteration's "
           "chains as `previous` to initial_chains.")

    torch.manual_seed(seed)
    model = LearnableGaussian()
    _, samples = _train(train_ebm, model, data, "train_ebm(gaussian energy, data, n_iters=300, chain_length=10)",
                        n_iters=300, chain_length=10, init="persistent", step_size=0.1, lr=0.05, generator=generator(seed))
    centre, scale = model.centre.detach().cpu().double(), float(torch.exp(model.log_scale.detach()))
    target_centre, target_scale = data.double().mean(0), float(data.double().std(0).mean())
    if max_abs_diff(centre, target_centre) > 0.35 or abs(scale / target_scale - 1) > 0.2:
        hint = ("the centre moved *away* from the data: minimise mean E(data) − mean E(samples), not the reverse"
                if float((centre - target_centre).norm()) > float(target_centre.norm()) else
                "check that every iteration runs chain_length SGLD steps from the chains, computes ebm_loss on the "
                "data and the new samples, and takes one optimiser step (zero_grad, backward, step)")
        fail(f"trained by contrastive divergence, a Gaussian energy should reach the maximum-likelihood fit: centre "
             f"{fmt(target_centre)} and scale {target_scale:.3g}; got centre {fmt(centre)} and scale {scale:.3g}: {hint}.")
    passed(f"train_ebm: initialisations honoured, chains persist, and a Gaussian energy learns centre {fmt(centre, 3)} "
           f"and scale {scale:.2f} (data: {fmt(target_centre, 3)}, {target_scale:.2f})")


# --------------------------------------------------------- trained 2-D EBM
def _mode_report(points: torch.Tensor):
    """Share of points in the upper-right mode, and per-mode means and per-axis spreads."""
    upper = points.sum(1) > 0
    stats = []
    for mask in (upper, ~upper):
        chosen = points[mask]
        stats.append((chosen.mean(0), chosen.std(0)) if len(chosen) > 2 else (None, None))
    return float(upper.double().mean()), stats


def _expect_modes(points: torch.Tensor, what: str, min_share: float, max_share: float, mean_tol: float,
                  spread_range: tuple[float, float]):
    share, stats = _mode_report(points)
    expect(min_share <= share <= max_share,
           f"{what}: {share:.0%} of the points are in the upper-right mode, expected between {min_share:.0%} and "
           f"{max_share:.0%}" + (" — one mode is missing." if min(share, 1 - share) < 0.02 else "."))
    for (mean, spread), centre in zip(stats, MODES):
        centre = torch.tensor(centre, dtype=points.dtype)
        expect(max_abs_diff(mean, centre) <= mean_tol,
               f"{what}: the mode near {tuple(centre.tolist())} has its mean at {fmt(mean, 3)}, expected within "
               f"{mean_tol} of it per axis.")
        expect(bool(((spread >= spread_range[0]) & (spread <= spread_range[1])).all()),
               f"{what}: the mode near {tuple(centre.tolist())} has per-axis spreads {fmt(spread, 3)}, expected between "
               f"{spread_range[0]} and {spread_range[1]} (unit Gaussians)"
               + (": too narrow — is the Langevin noise missing or too small?" if float(spread.min()) < spread_range[0]
                  else "."))
    return share


@one_thread()
def check_trained_ebm_2d(train_ebm, sgld_sample, seed: int = 0) -> None:
    """Train the 2-10-10-1 ReLU energy on the two-Gaussian data with ``train_ebm`` (persistent chains, budget sizes).

    What is checked is what stays stable across seeds (measured over 20): the persistent chains cover both
    modes in a roughly balanced way, with the right per-mode means and spreads; long fresh chains from noise
    find both modes with the right means and spreads. The *share* of fresh samples per mode is not checked:
    it swings from 0.2 to 0.9 between seeds, because short chains rarely cross between the modes, so
    training barely constrains the two modes' relative depth.
    """
    sizes = budget("03")
    g = generator(seed)
    data = two_gaussians(sizes.check_ebm_chains, g)
    torch.manual_seed(seed)
    energy = SmallEnergyMLP()
    _, chains = _train(train_ebm, energy, data, f"train_ebm(energy, data, n_iters={sizes.check_ebm_iters}, "
                       "chain_length=10)", n_iters=sizes.check_ebm_iters, chain_length=10, init="persistent",
                       step_size=0.1, lr=sizes.check_ebm_lr, generator=g)
    tolerances = dict(mean_tol=0.6, spread_range=(0.6, 1.6))
    chain_share = _expect_modes(chains, "the persistent chains after training", 0.25, 0.75, **tolerances)
    torch.manual_seed(seed)
    # A generator of its own: g went on in the training, in the kernel when judged.
    x0 = (5 * torch.randn(1000, 2, generator=generator(seed + 1))).to(next(energy.parameters()).device)
    fresh = as_tensor(call(sgld_sample, energy, x0, 500, 0.1, what="sgld_sample(trained energy, noise, 500, 0.1)"),
                      "fresh samples").to(torch.float64)
    fresh_share = _expect_modes(fresh, "500-step chains started from noise on the trained energy", 0.03, 0.97, **tolerances)
    passed(f"trained 2-D EBM: persistent chains {chain_share:.0%} / {1 - chain_share:.0%} over the modes, fresh chains "
           f"{fresh_share:.0%} / {1 - fresh_share:.0%} (not graded), per-mode means and spreads right")


# ------------------------------------------------------------------- MNIST
def _probe_cnn_gradients(model, x):
    """In train mode: ∇ₓ of the summed energies (None when they do not depend on x), then, after a backward pass of
    the energies of x.detach(), each trainable parameter's gradient size (None when none reached it)."""
    model.train()
    x = x.clone().requires_grad_(True)
    total = model(x).sum()
    if not total.requires_grad:
        return None, None
    (grad,) = torch.autograd.grad(total, x, allow_unused=True)
    model(x.detach()).sum().backward()
    return grad, [None if p.grad is None else float(p.grad.abs().sum()) for p in model.parameters() if p.requires_grad]


def check_energy_cnn(EnergyCNN, seed: int = 0) -> None:
    """[B, 1, 28, 28] -> [B], finite, one energy per image whatever the batch, gradients to the input and the weights."""
    torch.manual_seed(seed)
    model = call(EnergyCNN, what="EnergyCNN()")
    expect(is_instance(model, torch.nn.Module), "EnergyCNN should subclass torch.nn.Module.")
    x = torch.rand(6, 1, 28, 28, generator=generator(seed)) * 2 - 1
    x[3:] = 1.0  # very different batch-mates: batch statistics would move the first images' energies a lot
    for mode in ("train", "eval"):
        getattr(model, mode)()
        with torch.no_grad():
            energies = call(model, x, what="EnergyCNN()(x)")
            expect(isinstance(energies, torch.Tensor), f"the model should return a tensor, got {type_name(energies)}.")
            expect(tuple(energies.shape) == (6,), f"EnergyCNN()(x) for x of shape [6, 1, 28, 28] has shape "
                   f"{tuple(energies.shape)}; expected [6], one energy per image (squeeze the last axis).")
            expect(bool(torch.isfinite(energies).all()), "EnergyCNN returned NaN or inf on images in [-1, 1].")
            alone = call(model, x[:2], what="EnergyCNN()(x[:2])")
        # An untrained network's energies differ little between images, so compare with that spread.
        expect(max_abs_diff(alone, energies[:2]) <= 1e-2 * float(energies.std()) + 1e-6,
               f"in {mode} mode the energy of an image depends on the other images in the batch: no BatchNorm or "
               "dropout — Langevin sampling needs E(x) to be a fixed function of x alone.")
    grad, weight_grads = call(_probe_cnn_gradients, model, x, what="EnergyCNN()(x) with gradients")
    expect(grad is not None and float(grad.abs().sum()) > 0,
           "the energy has no gradient with respect to the input image: Langevin sampling needs ∇ₓE(x) "
           "(do not detach, round or argmax inside the model).")
    expect(all(size is not None for size in weight_grads),
           "some parameters of EnergyCNN receive no gradient from the energy: are all layers used in forward?")
    passed("EnergyCNN: [B, 1, 28, 28] -> [B], per-image energies, gradients to the input and every weight")


def _pushed_ids(out: torch.Tensor) -> torch.Tensor:
    """The id of each stored image (every pixel holds 2 + id/1000) or -1 for noise (values in [-1, 1])."""
    flat = out.flatten(1).double()
    ids = torch.round((flat[:, 0] - 2) * 1000)
    constant = (flat - flat[:, :1]).abs().max(1).values < 1e-4
    return torch.where(constant & (flat[:, 0] > 1.5), ids, torch.full_like(ids, -1)).long()


def _buffer_sample(buffer, n, what, shape, **kwargs):
    out = call(buffer.sample, n, what=what, **kwargs)
    expect(isinstance(out, torch.Tensor), f"{what} should return a tensor, got {type_name(out)}.")
    expect(not out.requires_grad, f"{what} returns a tensor that requires grad: store detached copies in push.")
    expect_shape(out, (n, *shape), what)
    return out.detach().cpu()


def check_replay_buffer(ReplayBuffer, seed: int = 0, capacity: int = 100, n: int = 4000) -> None:
    """Uniform noise in [-1, 1] when empty and for a ``reinit_prob`` share; stored images drawn whole; only the
    ``capacity`` most recent kept; the generator makes sampling reproducible."""
    shape = (1, 3, 3)
    buffer = call(ReplayBuffer, capacity, shape, what=f"ReplayBuffer({capacity}, {shape})")
    noise = _buffer_sample(buffer, n, "sample(n) from an empty buffer", shape, generator=generator(seed))
    lo, hi, mean, std = float(noise.min()), float(noise.max()), float(noise.mean()), float(noise.std())
    expect(lo >= -1 and hi <= 1 and lo < -0.95 and hi > 0.95 and abs(mean) < 0.02 and abs(std - 1 / math.sqrt(3)) < 0.02,
           f"an empty buffer should give uniform noise on [-1, 1] (mean 0, std 0.577); got values in [{lo:.3g}, {hi:.3g}] "
           f"with mean {mean:.3g} and std {std:.3g}"
           + (" — use torch.rand(...) * 2 - 1, not randn." if hi > 1 or lo < -1 else
              " — map torch.rand to [-1, 1] with * 2 - 1." if lo >= 0 else "."))

    # Image k has every pixel equal to 2 + k/1000: outside [-1, 1], so it cannot be confused with noise. Whole
    # batches of 25 are pushed, so which images are the oldest does not depend on the order inside a batch.
    total = capacity + 50
    images = 2 + torch.arange(total, dtype=torch.float32).div(1000).view(-1, 1, 1, 1).expand(total, *shape).clone()
    pushed = images.clone().requires_grad_(True)
    for start in range(0, total, 25):
        call(buffer.push, pushed[start:start + 25], what="buffer.push(x)")
    ids = _pushed_ids(_buffer_sample(buffer, n, "sample(n, reinit_prob=0.0)", shape, reinit_prob=0.0,
                                     generator=generator(seed)))
    expect(bool((ids >= 0).all()), "with reinit_prob=0.0 every sample should be a stored image, unchanged; "
                                   "some were noise or mixed pixels of different images.")
    kept = set(range(total - capacity, total))
    found = set(ids.tolist())
    expect(found <= kept, f"after pushing {total} images into a buffer of capacity {capacity}, the oldest "
                          f"{total - capacity} should be gone, but some came back (e.g. images {sorted(found - kept)[:3]}). "
                          "Keep only the `capacity` most recent images.")
    expect(len(found) >= 0.95 * capacity, f"sampling {n} times from a full buffer of {capacity} images returned only "
                                           f"{len(found)} different ones: draw uniformly from everything stored.")

    for p in (0.05, 0.3, 1.0):
        kwargs = {} if p == 0.05 else {"reinit_prob": p}
        out = _buffer_sample(buffer, n, f"sample(n, reinit_prob={p})", shape, generator=generator(seed + 1), **kwargs)
        ids = _pushed_ids(out)
        noise_rows = out.flatten(1)[ids < 0]
        expect(bool(((noise_rows >= -1) & (noise_rows <= 1)).all()),
               f"sample(n, reinit_prob={p}) returns images that mix stored pixels with noise pixels: decide once per "
               "image (one random number per image), not per pixel.")
        share = float((ids < 0).double().mean())
        expect(abs(share - p) <= 6 * math.sqrt(p * (1 - p) / n) + 1e-9,
               f"sample(n, reinit_prob={p}) gave fresh noise for {share:.1%} of the images, expected {p:.0%}"
               + (" (the default reinit_prob is 0.05)." if p == 0.05 else "."))
    first = _buffer_sample(buffer, 200, "sample(200, generator=g)", shape, generator=generator(seed + 2))
    torch.manual_seed(seed + 999)  # a different global state must not matter
    second = _buffer_sample(buffer, 200, "sample(200, generator=g)", shape, generator=generator(seed + 2))
    expect(torch.equal(first, second), "two samples with generators of the same seed differ: pass generator= to "
                                       "every random call (torch.rand, torch.randint).")
    passed(f"ReplayBuffer: uniform noise in [-1, 1], a reinit_prob share of noise, FIFO capacity {capacity}, reproducible")


def _probe_energies(model, images):
    """The model's energies of ``images`` in eval mode, without a graph, computed on the model's own device."""
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x.to(device)).cpu() for x in images.split(500)])


def energy_separation(model, real: torch.Tensor, other: torch.Tensor) -> tuple[float, float]:
    """(AUROC, mean energy gap) of the energy for telling ``other`` (the positive class, which should get the
    higher energy) from ``real``."""
    e_real = as_tensor(call(_probe_energies, model, real, what="the trained EnergyCNN on test digits"), "energies")
    e_other = as_tensor(call(_probe_energies, model, other, what="the trained EnergyCNN on noise"), "energies")
    labels = np.r_[np.zeros(len(e_real)), np.ones(len(e_other))]
    return float(roc_auc_score(labels, torch.cat([e_real, e_other]).double().numpy())), float(e_other.mean() - e_real.mean())


@one_thread()
def check_mnist_ebm(EnergyCNN, ReplayBuffer, train_mnist_ebm, seed: int = 0) -> None:
    """After a short training (budget sizes), real test digits get lower energy than uniform noise.

    An untrained network ranks them at random (AUROC anywhere in 0.03–0.98 over init seeds, energy gap about
    0.001), so the check asks for both a high AUROC and a clear energy gap.
    """
    sizes = budget("03")
    train, _ = load_mnist("train")
    test, _ = load_mnist("test")
    g = generator(seed)
    real = test[torch.randperm(len(test), generator=g)[:1000]] * 2 - 1
    noise = torch.rand(1000, 1, 28, 28, generator=g) * 2 - 1
    torch.manual_seed(seed)
    model = call(EnergyCNN, what="EnergyCNN()")
    buffer = call(ReplayBuffer, sizes.mnist_buffer, (1, 28, 28), what=f"ReplayBuffer({sizes.mnist_buffer}, (1, 28, 28))")
    what = (f"train_mnist_ebm(model, images, n_iters={sizes.check_mnist_iters}, batch_size={sizes.check_mnist_batch}, "
            f"n_steps={sizes.check_mnist_steps})")
    result = call(train_mnist_ebm, model, train * 2 - 1, n_iters=sizes.check_mnist_iters,
                  batch_size=sizes.check_mnist_batch, n_steps=sizes.check_mnist_steps, buffer=buffer,
                  generator=g, what=what)
    expect(isinstance(result, dict) and "loss" in result and len(result["loss"]) == sizes.check_mnist_iters,
           f"{what} should return a dict whose 'loss' has one entry per iteration ({sizes.check_mnist_iters}).")
    auroc, gap = energy_separation(model, real, noise)
    expect(auroc >= MNIST_MIN_AUROC and gap >= MNIST_MIN_GAP,
           f"after {what}, real test digits vs uniform noise: energy AUROC {auroc:.3f} (needs ≥ {MNIST_MIN_AUROC}) and "
           f"mean energy gap {gap:.3g} (needs ≥ {MNIST_MIN_GAP}). "
           + ("Noise gets clearly *lower* energy than digits: the loss sign is flipped (lower the data's energy)."
              if gap < -0.01 else
              "The energies barely moved: does each iteration sample from the buffer, run SGLD, push the samples back, "
              "and take an optimiser step on ebm_loss?"))
    passed(f"MNIST EBM: real test digits vs uniform noise, energy AUROC {auroc:.3f}, gap {gap:.2f}")



# ------------------------------------------------------------- composition
def _composition_energies():
    """Three Gaussian energies with different centres and widths, [B, 2] -> [B]."""
    return [GaussianEnergy([2.0, 1.0], [1.0, 0.5]), GaussianEnergy([-1.0, 0.5], [0.7, 1.5]),
            GaussianEnergy([0.5, -2.0], [1.2, 1.0])]


def _probe_energy_and_gradient(composed, x):
    """composed(x) as returned and, when it is a tensor with a graph, the gradient of its sum in x (None when it
    does not depend on x)."""
    x = x.clone().requires_grad_(True)
    out = composed(x)
    grad = None
    if isinstance(out, torch.Tensor) and out.requires_grad:
        (grad,) = torch.autograd.grad(out.sum(), x, allow_unused=True)
    return out, grad


def _composed(compose_energies, energies, op, x, what, **kwargs):
    """The composed energy of x (float64 [B]) and its gradient in x, after the usual checks on the output."""
    composed = call(compose_energies, energies, op, what=what, **kwargs)
    expect(callable(composed), f"{what} should return a function x -> energies [B], got {type_name(composed)}.")
    out, grad = call(_probe_energy_and_gradient, composed, x, what=f"{what}(x)")
    expect(isinstance(out, torch.Tensor), f"{what}(x) should return a tensor, got {type_name(out)}.")
    expect_shape(out, (len(x),), f"{what}(x) for x of shape {tuple(x.shape)}")
    expect(out.dtype == x.dtype, f"{what}(x) returned {out.dtype} for {x.dtype} input: keep the dtype.")
    expect(bool(torch.isfinite(out).all()),
           f"{what}(x) returned inf or NaN for energies of a few thousand"
           + (": exp(−E) underflows to 0 (or overflows); compute −log Σ exp(−Eᵢ) with torch.logsumexp." if op == "or"
              else "."))
    expect(out.requires_grad and grad is not None, f"{what}(x) is detached from x: sgld_sample needs its gradient ∇ₓE "
                                                   "(no .item(), .detach() or NumPy inside).")
    return out.detach().double(), grad.double()


_COMPOSITIONS = {  # op -> (energies used, keyword arguments, closed form from the stacked energies [K, B])
    "and": lambda E, alpha: E.sum(0),
    "or": lambda E, alpha: -torch.logsumexp(-E, 0),
    "not": lambda E, alpha: E[0] - alpha * E[1],
}


def _diagnose_composition(got, x, values, op, alpha) -> str:
    """Name the likely mistake: which plausible wrong formula ``got`` matches (up to a constant)."""
    candidates = {
        "or": {"this is AND (the sum of the energies); OR is the mixture −log Σᵢ exp(−Eᵢ)": values.sum(0),
               "this is the minimum of the energies, which is only the zero-temperature limit of OR; use "
               "−torch.logsumexp(−E, dim=0)": values.min(0).values,
               "the signs inside logsumexp are wrong: OR is −logsumexp(−Eᵢ), not logsumexp(Eᵢ)": torch.logsumexp(values, 0),
               "the result is missing its minus sign: OR is −logsumexp(−Eᵢ)": torch.logsumexp(-values, 0)},
        "not": {"the base energy is missing: NOT is E_base − α·E_neg (−α·E_neg alone has no minimum)": -alpha * values[1],
                "α is ignored": values[0] - values[1],
                "the negated energy is added; NOT subtracts it: E_base − α·E_neg": values[0] + alpha * values[1],
                "the roles are swapped: the first energy is the base, the second the one negated":
                    values[1] - alpha * values[0]},
        "and": {"AND is the sum of the energies (product of the densities), not their mean": values.mean(0)},
    }[op]
    for cause, value in candidates.items():
        if _equal_up_to_constant(got, value):
            return cause
    return {"and": "AND is Σᵢ Eᵢ(x)", "or": "OR is −logsumexp over i of −Eᵢ(x)",
            "not": "NOT is E_base(x) − alpha·E_neg(x)"}[op]


def _equal_up_to_constant(a, b, tol: float = 1e-6) -> bool:
    diff = a.double() - b.double()
    return bool((diff - diff.mean()).abs().max() <= tol * (1 + float(b.double().abs().max() - b.double().abs().min())))


def check_compose_energies(compose_energies, seed: int = 0, n: int = 64) -> None:
    """AND = Σ Eᵢ, OR = −logsumexp(−Eᵢ) (stable), NOT = E_base − α·E_neg, each compared with the closed form
    (values up to an additive constant, which changes no distribution, and gradients in x), for 2 and 3 energies,
    float32 and float64, with energies shifted by ±3000 where a naive exp/log overflows; NOT without exactly two
    energies must raise a ValueError."""
    g = generator(seed)
    base = _composition_energies()
    for dtype in (torch.float64, torch.float32):
        x = (2 * torch.randn(n, 2, generator=g, dtype=torch.float64)).to(dtype)
        for shift in (0.0, 3000.0, -3000.0):
            energies = [lambda v, e=e, shift=shift: e(v) + shift for e in base]
            cases = [("and", energies, 1.0), ("and", energies[:2], 1.0), ("or", energies, 1.0), ("or", energies[:2], 1.0),
                     ("not", energies[:2], 1.0), ("not", energies[1:], 0.5)]
            for op, chosen, alpha in cases:
                if shift and op != "or":
                    continue  # only OR exponentiates the energies
                kwargs = {"alpha": alpha} if alpha != 1.0 else {}
                args = ", ".join([f"[{len(chosen)} energies]", repr(op)] + [f"alpha={alpha}" for _ in kwargs])
                what = f"compose_energies({args})" + (f" (energies shifted by {shift:+.0f})" if shift else "")
                got, grad = _composed(compose_energies, chosen, op, x, what, **kwargs)
                x64 = x.double().requires_grad_(True)
                values = torch.stack([e(x64) for e in chosen])
                expected = _COMPOSITIONS[op](values, alpha)
                (expected_grad,) = torch.autograd.grad(expected.sum(), x64)
                tol = 1e-9 if dtype == torch.float64 else 2e-4
                if not _equal_up_to_constant(got, expected.detach(), tol if not shift else tol + 1e-6):
                    fail(f"{what}(x) is not the expected composed energy (up to a constant): "
                         f"{_diagnose_composition(got, x64, values.detach(), op, alpha)}.")
                scale = 1 + float(expected_grad.abs().max())
                expect(max_abs_diff(grad, expected_grad) <= tol * scale * 10,
                       f"{what}: the gradient in x differs from that of the closed form by up to "
                       f"{max_abs_diff(grad, expected_grad):.3g}; Langevin sampling follows this gradient.")
    for chosen in (base[:1], base):
        what = f"compose_energies([{len(chosen)} energies], 'not')"
        try:
            with silenced():
                composed = compose_energies(chosen, "not")
        except ValueError:
            continue
        except Exception as error:
            fail(f"{what} raised {type(error).__name__}: {error}; raise a ValueError saying that NOT needs exactly two "
                 "energies (a base and the one to negate).")
        why = "NOT needs exactly two energies, the base E_base and the energy to negate (−α·E alone has no minimum: " \
              "chains run off to infinity)."
        try:  # a ValueError raised only when the returned function is called is the lazy reading of the task
            with silenced():
                composed(x)
        except ValueError:
            fail(f"{what} returned a function that raises the ValueError when called: raise in compose_energies "
                 f"itself, before returning (the energies are known there). {why}")
        except Exception:  # any other error, like none, leaves the missing ValueError of the factory to report
            pass
        fail(f"{what} should raise a ValueError: {why}")
    passed("compose_energies: AND = ΣEᵢ, OR = −logsumexp(−Eᵢ) (stable at ±3000), NOT = E_base − α·E_neg; values and "
           "gradients, float32 and float64; NOT needs exactly two energies")
