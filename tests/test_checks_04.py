"""The checkers of assignment 04 pass the reference and fail plausible wrong answers, in the student's own kernel
(local) and as grading runs them (judged: the answers live in a separate stand-in kernel, behind Remote handles)."""
import contextlib
import copy
import math

import pytest
import torch
from torch import nn

from conftest import fails, message
from helpers import budgets
from helpers.checks import a04 as checks
from helpers.noise import geometric_sigmas


def gm_variant(ref04, **overrides):
    """The reference GaussianMixture with some methods replaced by wrong ones."""
    return type("Variant", (ref04.GaussianMixture,), overrides)


# ------------------------------------------------------------------ helpers
def test_geometric_sigmas():
    sigmas = geometric_sigmas(0.01, 1.0, 10)
    assert sigmas.shape == (10,) and sigmas.dtype == torch.float32
    assert float(sigmas[0]) == pytest.approx(0.01) and float(sigmas[-1]) == pytest.approx(1.0)
    ratios = sigmas[1:] / sigmas[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios), rtol=1e-5)


def test_isotropic_score_matches_torch_distributions():
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    x = 3 * torch.randn(50, 2, dtype=torch.float64)
    covs = 0.3 * torch.eye(2, dtype=torch.float64).repeat(3, 1, 1)
    expected = checks._reference_score(checks._reference(weights, checks.WIDE_MEANS, covs), x)
    assert torch.allclose(checks._isotropic_score(x, weights, checks.WIDE_MEANS, 0.3), expected, atol=1e-10)


# ------------------------------------------------------------------ GaussianMixture
def test_gaussian_mixture_reference_passes(ref04, student):
    for seed in range(3):
        checks.check_log_prob(student(ref04.GaussianMixture), seed=seed)
        checks.check_score(student(ref04.GaussianMixture), seed=seed, K=4, d=3)
        checks.check_perturb(student(ref04.GaussianMixture), seed=seed)
    checks.check_sample(student(ref04.GaussianMixture))


class LoopMixture:
    """Another correct style: per-component loops, explicit inverses, logsumexp by hand, float64 inside."""

    def __init__(self, weights, means, covs):
        self.w, self.m, self.c = (torch.as_tensor(a) for a in (weights, means, covs))

    def _logs(self, x):
        x64 = x.double()
        logs, grads = [], []
        for w, m, c in zip(self.w.double(), self.m.double(), self.c.double()):
            inv = torch.linalg.inv(c)
            diff = x64 - m
            logs.append(torch.log(w) - 0.5 * ((diff @ inv) * diff).sum(1) - 0.5 * torch.logdet(2 * math.pi * c))
            grads.append(-diff @ inv)
        return torch.stack(logs, 1), torch.stack(grads, 1)

    def log_prob(self, x):
        logs, _ = self._logs(x)
        top = logs.max(1, keepdim=True).values
        return (top[:, 0] + torch.log(torch.exp(logs - top).sum(1))).to(x.dtype)

    def score(self, x):
        logs, grads = self._logs(x)
        return (torch.softmax(logs, 1)[..., None] * grads).sum(1).to(x.dtype)

    def sample(self, n, generator=None):
        k = torch.multinomial(self.w.double(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.m.shape[1], generator=generator, dtype=torch.float64)
        chol = torch.linalg.cholesky(self.c.double())
        return self.m.double()[k] + torch.einsum("nij,nj->ni", chol[k], z)

    def perturb(self, sigma):
        return LoopMixture(self.w, self.m, self.c + sigma**2 * torch.eye(self.m.shape[1], dtype=self.c.dtype))


def test_gaussian_mixture_loop_style_passes(student):
    checks.check_log_prob(student(LoopMixture))
    checks.check_score(student(LoopMixture), seed=4, K=2, d=5)
    checks.check_sample(student(LoopMixture))
    checks.check_perturb(student(LoopMixture))


def naive_log_prob(self, x):
    dens = sum(w * torch.exp(-0.5 * (((x - m) @ torch.linalg.inv(c)) * (x - m)).sum(1)) / torch.sqrt(torch.det(2 * math.pi * c))
               for w, m, c in zip(self.weights.to(x.dtype), self.means.to(x.dtype), self.covs.to(x.dtype)))
    return torch.log(dens)


def no_weights_log_prob(self, x):
    logs, _ = self._log_components(x)
    return torch.logsumexp(logs - torch.log(self.weights.to(x.dtype)), 1)


def no_norm_log_prob(self, x):
    logs, _ = self._log_components(x)
    d = x.shape[1]
    return torch.logsumexp(logs, 1) + 0.5 * d * math.log(2 * math.pi)


@pytest.mark.parametrize("wrong, message", [
    (naive_log_prob, "logsumexp"),
    (no_weights_log_prob, "ignores the mixture weights"),
    (no_norm_log_prob, "normalising term"),
])
def test_log_prob_wrong_fails(ref04, wrong, message, student):
    fails(checks.check_log_prob, student(gm_variant(ref04, log_prob=wrong)), match=message)


def naive_score(self, x):
    dens = [w * torch.exp(-0.5 * (((x - m) @ torch.linalg.inv(c)) * (x - m)).sum(1)) for w, m, c in
            zip(self.weights.to(x.dtype), self.means.to(x.dtype), self.covs.to(x.dtype))]
    grads = [-(x - m) @ torch.linalg.inv(c) for m, c in zip(self.means.to(x.dtype), self.covs.to(x.dtype))]
    total = sum(dens)
    return sum(p[:, None] * g for p, g in zip(dens, grads)) / total[:, None]


def unweighted_score(self, x):
    logs, precision_diff = self._log_components(x)
    return -(torch.softmax(logs - torch.log(self.weights.to(x.dtype)), 1)[..., None] * precision_diff).sum(1)


def covariance_not_inverse_score(self, x):
    logs, _ = self._log_components(x)
    diff = x[:, None, :] - self.means.to(x.dtype)
    return -(torch.softmax(logs, 1)[..., None] * (self.covs.to(x.dtype)[None] @ diff[..., None])[..., 0]).sum(1)


@pytest.mark.parametrize("wrong, message", [
    (naive_score, "NaN or inf"),
    (unweighted_score, "ignores the mixture weights"),
    (covariance_not_inverse_score, "differs from the gradient"),
])
def test_score_wrong_fails(ref04, wrong, message, student):
    fails(checks.check_score, student(gm_variant(ref04, score=wrong)), match=message)


def test_score_sign_error_fails(ref04, student):
    fails(checks.check_score, student(gm_variant(ref04, score=lambda self, x: -ref04.GaussianMixture.score(self, x))),
          match="wrong sign")


def equal_weight_sample(self, n, generator=None):
    k = torch.randint(len(self.weights), (n,), generator=generator)
    z = torch.randn(n, self.means.shape[1], generator=generator, dtype=self.means.dtype)
    return self.means[k] + (torch.linalg.cholesky(self.covs)[k] @ z[..., None])[..., 0]


def cov_not_sqrt_sample(self, n, generator=None):
    k = torch.multinomial(self.weights.double(), n, replacement=True, generator=generator)
    z = torch.randn(n, self.means.shape[1], generator=generator, dtype=self.means.dtype)
    return self.means[k] + (self.covs[k] @ z[..., None])[..., 0]


def global_rng_sample(self, n, generator=None):
    k = torch.multinomial(self.weights.double(), n, replacement=True)
    z = torch.randn(n, self.means.shape[1], dtype=self.means.dtype)
    return self.means[k] + (torch.linalg.cholesky(self.covs)[k] @ z[..., None])[..., 0]


@pytest.mark.parametrize("wrong, message", [
    (equal_weight_sample, "shares of samples"),
    (cov_not_sqrt_sample, "Σ itself"),
    (global_rng_sample, "generator"),
])
def test_sample_wrong_fails(ref04, wrong, message, student):
    fails(checks.check_sample, student(gm_variant(ref04, sample=wrong)), match=message)


def sigma_not_squared(self, sigma):
    return type(self)(self.weights, self.means, self.covs + sigma * torch.eye(self.means.shape[1], dtype=self.covs.dtype))


def in_place(self, sigma):
    self.covs += sigma**2 * torch.eye(self.means.shape[1], dtype=self.covs.dtype)
    return self


def every_entry(self, sigma):
    return type(self)(self.weights, self.means, self.covs + sigma**2)


@pytest.mark.parametrize("wrong, message", [
    (sigma_not_squared, "added σ·I"),
    (in_place, "original mixture has changed"),
    (every_entry, "every entry"),
])
def test_perturb_wrong_fails(ref04, wrong, message, student):
    fails(checks.check_perturb, student(gm_variant(ref04, perturb=wrong)), match=message)


# ------------------------------------------------------------------ Langevin
def test_langevin_reference_passes(ref04, student):
    for seed in range(3):
        checks.check_langevin(student(ref04.langevin_dynamics), seed=seed)
    checks.check_langevin(student(ref04.langevin_dynamics), seed=5, n=6000, step_size=0.2, n_steps=30)


def preallocated_langevin(score_fn, x0, step_size, n_steps, return_trajectory=False, generator=None):
    """Another correct style: all states in one preallocated tensor."""
    states = torch.empty(n_steps + 1, *x0.shape, dtype=x0.dtype, device=x0.device)
    states[0] = x0
    for i in range(n_steps):
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        states[i + 1] = states[i] + step_size / 2 * score_fn(states[i]) + step_size**0.5 * noise
    return states if return_trajectory else states[-1]


def test_langevin_preallocated_style_passes(student):
    checks.check_langevin(student(preallocated_langevin))


def langevin_variant(drift=0.5, noise=1.0, draw="cpu, moved"):
    def run(score_fn, x0, step_size, n_steps, return_trajectory=False, generator=None):
        x, states = x0.clone(), [x0.clone()]
        for _ in range(n_steps):
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=None if draw == "cpu" else x.device) \
                if draw != "cpu, moved" else torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            x = x + drift * step_size * score_fn(x) + noise * math.sqrt(step_size) * z
            states.append(x)
        return torch.stack(states) if return_trajectory else x
    return run


@pytest.mark.parametrize("wrong, message", [
    (langevin_variant(noise=0.0), "noise term"),
    (langevin_variant(noise=math.sqrt(2)), "twice too large"),
    (langevin_variant(drift=1.0), "twice too fast"),
    (langevin_variant(draw="cpu"), "a tensor made on the CPU met x"),
    (langevin_variant(draw="x's device"), "drawn on x's device with the CPU generator"),
])
def test_langevin_wrong_fails(wrong, message, student):
    fails(checks.check_langevin, student(wrong), match=message)


def test_langevin_updating_x0_in_place_fails(student):
    def in_place(score_fn, x0, step_size, n_steps, return_trajectory=False, generator=None):
        x, states = x0, [x0.clone()]  # x is the caller's tensor: every update below overwrites its starting points
        for _ in range(n_steps):
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            x += step_size / 2 * score_fn(x) + math.sqrt(step_size) * z
            states.append(x.clone())
        return torch.stack(states) if return_trajectory else x.clone()

    fails(checks.check_langevin, student(in_place), match="changed x0 in place")


def test_langevin_bad_trajectory_fails(ref04, student):
    def no_start(score_fn, x0, step_size, n_steps, return_trajectory=False, generator=None):
        out = ref04.langevin_dynamics(score_fn, x0, step_size, n_steps, return_trajectory, generator)
        return out[1:] if return_trajectory else out

    fails(checks.check_langevin, student(no_start), match=r"n_steps \+ 1")


# ------------------------------------------------------------------ DSM
def test_dsm_loss_reference_passes(ref04, student):
    for seed in range(3):
        checks.check_dsm_loss(student(ref04.dsm_loss), seed=seed)
    checks.check_dsm_loss(student(ref04.dsm_loss), seed=7, d=3, s=0.5)


def dsm_variant(reduce_dims="sum", weight=True, sign=1.0, per_batch=False, half=0.5, detach=False, sigma_device="x"):
    def loss_fn(score_model, x, sigmas, generator=None):
        sigmas = torch.as_tensor(sigmas, dtype=x.dtype)
        n_draws = 1 if per_batch else len(x)
        sigma = sigmas[torch.randint(len(sigmas), (n_draws,), generator=generator)].expand(len(x))[:, None]
        sigma = sigma.to(x.device) if sigma_device == "x" else sigma
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        s = score_model(x + sigma * z, sigma)
        residual = sigma * s + sign * z if weight else s + sign * z / sigma
        sq = residual**2
        loss = half * (sq.sum(1) if reduce_dims == "sum" else sq.mean(1)).mean()
        return loss.detach() if detach else loss
    return loss_fn


def test_dsm_loss_numpy_sigmas_style_passes(student):
    """Another correct style: σ drawn by index into a Python list, noise with the generator first."""
    def loss_fn(score_model, x, sigmas, generator=None):
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        idx = torch.randint(0, len(sigmas), (x.shape[0], 1), generator=generator)
        sigma = torch.as_tensor([float(s) for s in sigmas], dtype=x.dtype)[idx].to(x.device)
        z = z.to(x.device)
        return (0.5 * torch.sum((sigma * score_model(x + sigma * z, sigma) + z) ** 2, dim=-1)).mean()
    checks.check_dsm_loss(student(loss_fn))


@pytest.mark.parametrize("wrong, message", [
    (dsm_variant(reduce_dims="mean"), "averaged over the d coordinates"),
    (dsm_variant(weight=False), "closed form"),
    (dsm_variant(sign=-1.0), "mind the \\+ sign"),
    (dsm_variant(per_batch=True), "one σ for the whole batch"),
    (dsm_variant(half=1.0), "Missing the ½"),
    (dsm_variant(detach=True), "without a graph"),
    (dsm_variant(sigma_device="cpu"), "a tensor made on the CPU met x"),
])
def test_dsm_loss_wrong_fails(wrong, message, student):
    fails(checks.check_dsm_loss, student(wrong), match=message)


def test_dsm_loss_wrong_noise_fails(student):
    def squared_sigma(score_model, x, sigmas, generator=None):
        sigma = torch.as_tensor(sigmas, dtype=x.dtype)[torch.randint(len(sigmas), (len(x),), generator=generator)][:, None]
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return 0.5 * ((sigma * score_model(x + sigma**2 * z, sigma) + z) ** 2).sum(1).mean()

    def flat_sigma(score_model, x, sigmas, generator=None):
        sigma = torch.as_tensor(sigmas, dtype=x.dtype)[torch.randint(len(sigmas), (len(x),), generator=generator)]
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return 0.5 * ((sigma[:, None] * score_model(x + sigma[:, None] * z, sigma) + z) ** 2).sum(1).mean()

    fails(checks.check_dsm_loss, student(squared_sigma), match="x̃ = x \\+ σ·z")
    fails(checks.check_dsm_loss, student(flat_sigma), match="shape \\[B, 1\\]")


# ------------------------------------------------------------------ EnergyScore
def test_energy_score_reference_passes(ref04, student):
    checks.check_energy_score(student(ref04.EnergyScore))
    checks.check_energy_score(student(ref04.EnergyScore), seed=3, n=5, d=2)


def energy_score_variant(sign=-1.0, create_graph=True, enable_grad=True, copy_energy=False, input_in_place=False):
    class Wrapped(nn.Module):
        def __init__(self, energy_model):
            super().__init__()
            self.energy_model = copy.deepcopy(energy_model) if copy_energy else energy_model

        def forward(self, x, sigma):
            with torch.enable_grad() if enable_grad else contextlib.nullcontext():
                x = x.requires_grad_(True) if input_in_place else x.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(self.energy_model(x, sigma).sum(), x, create_graph=create_graph)
            return sign * grad
    return Wrapped


class NotStored(nn.Module):
    def __init__(self, energy_model):
        super().__init__()
        self.f = [energy_model]  # hidden from nn.Module's registry

    def forward(self, x, sigma):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            return -torch.autograd.grad(self.f[0](x, sigma).sum(), x, create_graph=True)[0]


@pytest.mark.parametrize("wrong, message", [
    (energy_score_variant(sign=1.0), "returns \\+∇ₓf"),
    (energy_score_variant(create_graph=False), "create_graph=True"),
    (energy_score_variant(enable_grad=False), "enable_grad"),
    (NotStored, "parameters"),
    (energy_score_variant(copy_energy=True), "parameters"),
    (energy_score_variant(input_in_place=True), "changed its input x"),
])
def test_energy_score_wrong_fails(wrong, message, student):
    fails(checks.check_energy_score, student(wrong), match=message)


# ------------------------------------------------------------------ annealed Langevin
def test_annealed_langevin_reference_passes(ref04, student):
    checks.check_annealed_langevin(student(ref04.annealed_langevin))
    checks.check_annealed_langevin(student(ref04.annealed_langevin), seed=8, weights=(0.5, 0.3, 0.2), descending=True)
    checks.check_annealed_langevin(student(annealed_variant()))


def annealed_variant(step="scaled", order="sorted", sigma_shape="column", sigma_device="x", dtype="x"):
    def sample(score_fn, x0, sigmas, eps, T, generator=None):
        levels = torch.as_tensor(sigmas).sort(descending=True).values if order == "sorted" else torch.as_tensor(sigmas)
        x = x0.clone() if dtype == "x" else x0.double()
        for sigma in levels.tolist():
            alpha = eps * sigma**2 / float(levels.min()) ** 2 if step == "scaled" else eps
            level = torch.full((len(x), 1) if sigma_shape == "column" else (len(x),), sigma, dtype=x.dtype,
                               device=x.device if sigma_device == "x" else None)
            for _ in range(T):
                z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
                x = x + alpha / 2 * score_fn(x, level) + math.sqrt(alpha) * z
        return x
    return sample


@pytest.mark.parametrize("wrong, message", [
    (annealed_variant(step="constant"), "α = eps·σ²/σ_min²"),
    (annealed_variant(order="as given"), "start from the largest σ"),
    (annealed_variant(sigma_shape="flat"), "shape \\[n, 1\\]"),
    (annealed_variant(sigma_device="cpu"), "the score function received σ or t on the cpu device"),
    (annealed_variant(dtype="float64"), "returned torch.float64 for torch.float32 x0"),
])
def test_annealed_langevin_wrong_fails(wrong, message, student):
    fails(checks.check_annealed_langevin, student(wrong), match=message)


def test_trained_annealed_reference_passes(ref04, monkeypatch, student):
    monkeypatch.setenv("COURSE_BUDGET", "grade")
    checks.check_trained_annealed(student(ref04.dsm_loss), student(ref04.EnergyScore), student(ref04.annealed_langevin))


def test_trained_annealed_with_sign_error_in_loss_fails(ref04, monkeypatch, student):
    monkeypatch.setenv("COURSE_BUDGET", "grade")
    monkeypatch.setitem(budgets.SIZES["04"]["grade"], "check_iters", 300)  # a broken loss fails as fast as it learns
    fails(checks.check_trained_annealed, student(dsm_variant(sign=-1.0)), student(ref04.EnergyScore),
          student(ref04.annealed_langevin), match="after 300 DSM steps")


def test_trained_annealed_judged_message_is_the_local_message(ref04, monkeypatch, judged):
    monkeypatch.setenv("COURSE_BUDGET", "grade")
    monkeypatch.setitem(budgets.SIZES["04"]["grade"], "check_iters", 300)
    answers = (dsm_variant(sign=-1.0), ref04.EnergyScore, ref04.annealed_langevin)
    assert message(checks.check_trained_annealed, *map(judged, answers)) == message(checks.check_trained_annealed, *answers)


# ------------------------------------------------------------------ SDEs
def test_sde_classes_reference_pass(ref04, student):
    checks.check_sde_classes(student(ref04.SDE), student(ref04.OrnsteinUhlenbeck))
    checks.check_sde_classes(student(ref04.SDE), student(ref04.OrnsteinUhlenbeck), seed=4, n=9)


def sde_variant(ref04, reverse):
    class Wrong(ref04.SDE):
        def reverse_drift(self, x, t, score_fn):
            return reverse(self, x, t, score_fn)

    class WrongOU(Wrong):
        drift = ref04.OrnsteinUhlenbeck.drift
        diffusion = ref04.OrnsteinUhlenbeck.diffusion
    return Wrong, WrongOU


@pytest.mark.parametrize("reverse, message", [
    (lambda self, x, t, s: self.drift(x, t) + self.diffusion(t) ** 2 * s(x, t), "minus sign"),
    (lambda self, x, t, s: self.drift(x, t) - self.diffusion(t) * s(x, t), "diffusion squared"),
])
def test_sde_reverse_drift_wrong_fails(ref04, reverse, message, student):
    fails(checks.check_sde_classes, *map(student, sde_variant(ref04, reverse)), match=message)


def test_ou_wrong_fails(ref04, student):
    class PlusHalf(ref04.SDE):
        def drift(self, x, t):
            return 0.5 * x

        def diffusion(self, t):
            return 1.0

    class SqrtTwo(ref04.OrnsteinUhlenbeck):
        def diffusion(self, t):
            return math.sqrt(2)

    class Standalone:  # right formulas, but not an SDE
        def drift(self, x, t):
            return -0.5 * x

        def diffusion(self, t):
            return 1.0

        def reverse_drift(self, x, t, score_fn):
            return self.drift(x, t) - score_fn(x, t)

    fails(checks.check_sde_classes, student(ref04.SDE), student(PlusHalf), match="OU drift")
    fails(checks.check_sde_classes, student(ref04.SDE), student(SqrtTwo), match="should be 1")
    fails(checks.check_sde_classes, student(ref04.SDE), student(Standalone), match="should subclass SDE")


def em_variant(noise="sqrt", time="start", reverse_sign="negative", t_device="x"):
    def integrate(sde, x0, t0, t1, n_steps, score_fn=None, generator=None):
        dt = (t1 - t0) / n_steps
        x = x0.clone()
        for i in range(n_steps):
            t_now = t0 + (i + 1) * dt if time == "end" else t0 + i * dt
            t = torch.full((len(x), 1), t_now, dtype=x.dtype, device=x.device if t_device == "x" else None)
            step = dt if reverse_sign == "negative" else abs(dt)
            drift = sde.drift(x, t) if dt > 0 else sde.reverse_drift(x, t, score_fn)
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            scale = math.sqrt(abs(dt)) if noise == "sqrt" else (1.0 if noise == "unit" else 0.0)
            x = x + drift * step + sde.diffusion(t) * scale * z
        return x
    return integrate


def test_euler_maruyama_reference_passes(ref04, student):
    euler_maruyama, ou = student(ref04.euler_maruyama), student(ref04.OrnsteinUhlenbeck)
    checks.check_euler_maruyama_forward(euler_maruyama, ou)
    checks.check_euler_maruyama_forward(euler_maruyama, ou, seed=3, n=15_000, n_steps=50)
    checks.check_euler_maruyama_reverse(euler_maruyama, ou)
    checks.check_euler_maruyama_reverse(euler_maruyama, ou, seed=5, weights=(0.2, 0.2, 0.6))


def test_euler_maruyama_variant_of_reference_passes(ref04, student):
    checks.check_euler_maruyama_forward(student(em_variant()), student(ref04.OrnsteinUhlenbeck))
    checks.check_euler_maruyama_reverse(student(em_variant()), student(ref04.OrnsteinUhlenbeck))


@pytest.mark.parametrize("wrong, message", [
    (em_variant(noise="none"), "noise term"),
    (em_variant(noise="unit"), "√Δt"),
])
def test_euler_maruyama_forward_wrong_fails(ref04, wrong, message, student):
    fails(checks.check_euler_maruyama_forward, student(wrong), student(ref04.OrnsteinUhlenbeck), match=message)


def test_euler_maruyama_time_on_the_cpu_fails(ref04, student):
    wrong = student(em_variant(t_device="cpu"))
    fails(checks.check_euler_maruyama_forward, wrong, student(ref04.OrnsteinUhlenbeck), match="sde.drift received t on the cpu")
    fails(checks.check_euler_maruyama_reverse, wrong, student(ref04.OrnsteinUhlenbeck), match="received t on the cpu")


def test_euler_maruyama_forward_wrong_time_fails(ref04, student):
    fails(checks.check_euler_maruyama_forward, student(em_variant(time="end")), student(ref04.OrnsteinUhlenbeck),
          match="start of the step")


@pytest.mark.parametrize("wrong, message", [
    (em_variant(reverse_sign="positive"), "Δt is negative"),
    (em_variant(time="end"), "start of each step"),
])
def test_euler_maruyama_reverse_wrong_fails(ref04, wrong, message, student):
    fails(checks.check_euler_maruyama_reverse, student(wrong), student(ref04.OrnsteinUhlenbeck), match=message)


def test_euler_maruyama_reverse_with_sign_error_in_reverse_drift_fails(ref04, student):
    _, WrongOU = sde_variant(ref04, lambda self, x, t, s: self.drift(x, t) + self.diffusion(t) ** 2 * s(x, t))
    fails(checks.check_euler_maruyama_reverse, student(ref04.euler_maruyama), student(WrongOU), match="exact score")


# ------------------------------------------------------------------ VE SDE, probability flow, predictor–corrector
def test_variance_exploding_reference_passes(ref04, student):
    VarianceExploding, SDE = student(ref04.VarianceExploding), student(ref04.SDE)
    euler_maruyama = student(ref04.euler_maruyama)
    checks.check_variance_exploding(VarianceExploding, SDE)
    checks.check_variance_exploding(VarianceExploding, SDE, seed=3, n=9, sigma_min=0.01, sigma_max=50.0)
    for seed in range(2):
        checks.check_ve_reverse(euler_maruyama, VarianceExploding, seed=seed)
    checks.check_ve_reverse(euler_maruyama, VarianceExploding, seed=5, weights=(0.5, 0.3, 0.2), n_steps=300)


def test_variance_exploding_other_style_passes(ref04, student):
    """Another correct style: σ(t) through exp/log, diffusion as the square root of d[σ²]/dt."""
    class VE(ref04.SDE):
        def __init__(self, sigma_min, sigma_max):
            self.lo, self.hi = sigma_min, sigma_max

        def sigma(self, t):
            if not isinstance(t, torch.Tensor):
                return math.exp(math.log(self.lo) + t * math.log(self.hi / self.lo))
            return torch.exp(math.log(self.lo) + t.double() * math.log(self.hi / self.lo)).to(t.dtype)

        def drift(self, x, t):
            return x * 0

        def diffusion(self, t):
            sq = 2 * math.log(self.hi / self.lo) * self.sigma(t) ** 2
            return torch.sqrt(sq) if isinstance(sq, torch.Tensor) else math.sqrt(sq)

    checks.check_variance_exploding(student(VE), student(ref04.SDE))
    checks.check_ve_reverse(student(ref04.euler_maruyama), student(VE))


def ve_variant(ref04, diffusion):
    class Wrong(ref04.VarianceExploding):
        pass
    Wrong.diffusion = diffusion
    return Wrong


@pytest.mark.parametrize("diffusion, message", [
    (lambda self, t: self.sigma(t), "returned σ\\(t\\) itself"),
    (lambda self, t: (self.sigma(t) * math.log(self.sigma_max / self.sigma_min)) ** 0.5, "not dσ/dt"),
    (lambda self, t: self.sigma(t) * math.sqrt(math.log(self.sigma_max / self.sigma_min)), "diffusion\\(t\\)²"),
])
def test_variance_exploding_wrong_diffusion_fails(ref04, diffusion, message, student):
    wrong = ve_variant(ref04, diffusion)
    fails(checks.check_variance_exploding, student(wrong), student(ref04.SDE), match=message)
    fails(checks.check_ve_reverse, student(ref04.euler_maruyama), student(wrong), match="exact score")


def ve_sigma_through(ref04, dtype):
    """The reference VE with σ(t) computed through torch.as_tensor(t, dtype=dtype)."""
    class Through(ref04.VarianceExploding):
        def sigma(self, t):
            return self.sigma_min * (self.sigma_max / self.sigma_min) ** torch.as_tensor(t, dtype=dtype)
    return Through


def test_variance_exploding_float64_for_float32_fails(ref04, student):
    always_float64 = student(ve_sigma_through(ref04, torch.float64))  # a held-out answer: right values, always float64
    fails(checks.check_variance_exploding, always_float64, student(ref04.SDE),
          match="for a torch.float32 tensor t returned torch.float64")
    fails(checks.check_ve_reverse, student(ref04.euler_maruyama), always_float64,
          match="returned torch.float64 for torch.float32 x0")


def test_variance_exploding_float32_number_for_a_float_is_named(ref04, student):
    class AsTensor(ref04.VarianceExploding):  # torch.as_tensor(0.37) is a 0-d float32 tensor; tensors keep their dtype
        def sigma(self, t):
            return self.sigma_min * (self.sigma_max / self.sigma_min) ** torch.as_tensor(t)

    fails(checks.check_variance_exploding, student(AsTensor), student(ref04.SDE),
          match=r"sigma\(t\) for the float t = 0.37 returned a 0-d torch.float32 tensor, .*return a Python float")


def test_variance_exploding_wrong_sigma_fails(ref04, student):
    class Reversed(ref04.VarianceExploding):  # σ_max at t = 0: the levels numbered the other way round
        def sigma(self, t):
            return self.sigma_max * (self.sigma_min / self.sigma_max) ** t

    fails(checks.check_variance_exploding, student(Reversed), student(ref04.SDE), match="σ_min at t = 0")


def test_variance_exploding_not_an_sde_fails(ref04, student):
    class Standalone:  # the right methods, copied instead of inherited
        def __init__(self, sigma_min, sigma_max):
            self.sigma_min, self.sigma_max = sigma_min, sigma_max

        sigma, drift, diffusion = (ref04.VarianceExploding.sigma, ref04.VarianceExploding.drift,
                                   ref04.VarianceExploding.diffusion)
        reverse_drift = ref04.SDE.reverse_drift

    fails(checks.check_variance_exploding, student(Standalone), student(ref04.SDE), match="should subclass SDE")


def pf_variant(half=0.5, noise=0.0, direction="given", t_device="x"):
    def flow(sde, x0, t0, t1, n_steps, score_fn):
        dt = (t1 - t0) / n_steps
        if direction == "backwards only":
            dt = -abs(dt)
        x = x0.clone()
        for i in range(n_steps):
            t = torch.full((len(x), 1), t0 + i * dt, dtype=x.dtype, device=x.device if t_device == "x" else None)
            x = x + (sde.drift(x, t) - half * sde.diffusion(t) ** 2 * score_fn(x, t)) * dt
            x = x + noise * math.sqrt(abs(dt)) * torch.randn_like(x)
        return x
    return flow


def heun_flow(sde, x0, t0, t1, n_steps, score_fn):
    """Another correct style: Heun's second-order method, float64 inside."""
    dt = (t1 - t0) / n_steps
    x = x0.double()

    def velocity(x, t):
        t = torch.full((len(x), 1), t, dtype=torch.float64, device=x.device)
        return sde.drift(x, t) - 0.5 * sde.diffusion(t) ** 2 * score_fn(x, t)

    for i in range(n_steps):
        t = t0 + i * dt
        k1 = velocity(x, t)
        k2 = velocity(x + dt * k1, t + dt)
        x = x + dt * (k1 + k2) / 2
    return x.to(x0.dtype)


def test_probability_flow_ode_reference_passes(ref04, student):
    for seed in range(2):
        checks.check_probability_flow_ode(student(ref04.probability_flow_ode), student(ref04.OrnsteinUhlenbeck), seed=seed)
    checks.check_probability_flow_ode(student(heun_flow), student(ref04.OrnsteinUhlenbeck))
    checks.check_probability_flow_ode(student(pf_variant()), student(ref04.OrnsteinUhlenbeck))


@pytest.mark.parametrize("wrong, message", [
    (pf_variant(half=1.0), "the ½ is missing"),
    (pf_variant(half=-0.5), "sign error"),
    (pf_variant(noise=1.0), "deterministic"),
    (pf_variant(direction="backwards only"), "time running from t0"),
    (pf_variant(t_device="cpu"), "sde.drift received t on the cpu device"),
])
def test_probability_flow_ode_wrong_fails(ref04, wrong, message, student):
    fails(checks.check_probability_flow_ode, student(wrong), student(ref04.OrnsteinUhlenbeck), match=message)


def pc_variant(corrector_noise=2.0, corrector_sign=1.0, corrector_time="new", g2=2, noise_device="x"):
    def sample(sde, x0, t0, t1, n_steps, score_fn, snr=0.16, n_corrector=1, generator=None):
        dt = (t1 - t0) / n_steps
        x = x0.clone()
        move = (lambda z: z.to(x.device)) if noise_device == "x" else (lambda z: z)
        for i in range(n_steps):
            t = torch.full((len(x), 1), t0 + i * dt, dtype=x.dtype, device=x.device)
            z = move(torch.randn(x.shape, generator=generator, dtype=x.dtype))
            g = sde.diffusion(t)
            x = x + (sde.drift(x, t) - g**g2 * score_fn(x, t)) * dt + g * math.sqrt(abs(dt)) * z
            t_c = t + dt if corrector_time == "new" else t
            for _ in range(n_corrector):
                s = score_fn(x, t_c)
                z = move(torch.randn(x.shape, generator=generator, dtype=x.dtype))
                eps = 2 * (snr * z.norm(dim=1).mean() / s.norm(dim=1).mean()) ** 2
                x = x + corrector_sign * eps * s + torch.sqrt(corrector_noise * eps) * z
        return x
    return sample


def test_predictor_corrector_reference_passes(ref04, student):
    for seed in range(2):
        checks.check_predictor_corrector(student(ref04.predictor_corrector), seed=seed)
    checks.check_predictor_corrector(student(ref04.predictor_corrector), seed=7, n=3000)
    checks.check_predictor_corrector(student(pc_variant()))


@pytest.mark.parametrize("wrong, message", [
    (pc_variant(corrector_noise=0.0), "predictor–corrector with the exact score"),
    (pc_variant(corrector_noise=1.0), "√\\(2ε\\)"),
    (pc_variant(corrector_sign=-1.0), "predictor–corrector with the exact score"),
    (pc_variant(corrector_time="old"), "new time"),
    (pc_variant(g2=1), "predictor–corrector with the exact score"),
])
def test_predictor_corrector_wrong_fails(wrong, message, student):
    fails(checks.check_predictor_corrector, student(wrong), match=message)


def test_predictor_corrector_noise_left_on_the_cpu_fails(student):
    fails(checks.check_predictor_corrector, student(pc_variant(noise_device="cpu")), match="a tensor made on the CPU met x")


def pc_in_place(ref04):
    def sample(sde, x0, t0, t1, n_steps, score_fn, snr=0.16, n_corrector=1, generator=None):
        x0[:] = ref04.predictor_corrector(sde, x0, t0, t1, n_steps, score_fn, snr, n_corrector, generator)
        return x0
    return sample


def test_predictor_corrector_changing_x0_fails(ref04, student):
    fails(checks.check_predictor_corrector, student(pc_in_place(ref04)), match="changed its argument number 2 in place")


def test_predictor_corrector_without_corrector_fails(ref04, student):
    def no_corrector(sde, x0, t0, t1, n_steps, score_fn, snr=0.16, n_corrector=1, generator=None):
        return ref04.predictor_corrector(sde, x0, t0, t1, n_steps, score_fn, snr, 0, generator)

    fails(checks.check_predictor_corrector, student(no_corrector), match="200 times")


# ------------------------------------------------------------------ EnergyNet diagnostic
def energy_net_variant(activation=nn.SiLU, use_sigma=True, scaled=True):
    class Net(nn.Module):
        def __init__(self, hidden=32):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(3, hidden), activation(), nn.Linear(hidden, hidden), activation(),
                                     nn.Linear(hidden, 1))

        def forward(self, x, sigma):
            level = sigma.log() if use_sigma else torch.zeros_like(sigma)
            out = self.net(torch.cat([x, level], dim=1))[:, 0]
            return out / sigma[:, 0] if scaled else out
    return Net


def test_energy_net_diagnostic_reference_passes(ref04, capsys, student):
    assert checks.diagnose_energy_net(student(ref04.EnergyNet), 0.61, 0.604) == []
    assert "✔ EnergyNet" in capsys.readouterr().out
    assert checks.diagnose_energy_net(student(energy_net_variant(nn.ELU))) == []


@pytest.mark.parametrize("variant, message", [
    (energy_net_variant(nn.ReLU), "piecewise-linear"),
    (energy_net_variant(use_sigma=False), "does not depend on σ"),
    (energy_net_variant(scaled=False), "divide the output by σ"),
])
def test_energy_net_diagnostic_names_the_problem(variant, message, capsys, student):
    problems = checks.diagnose_energy_net(student(variant), 0.9, 0.604)
    assert len(problems) == 1 and message in problems[0]
    assert "likely cause of poor Figures" in capsys.readouterr().out


def test_energy_net_diagnostic_flags_a_high_loss(ref04, capsys, student):
    assert checks.diagnose_energy_net(student(ref04.EnergyNet), 0.75, 0.604) == []
    assert "above the exact score" in capsys.readouterr().out


# ------------------------------------------------------------ the release's stubs
class StubSDE:  # as released: drift and diffusion for subclasses, reverse_drift to write
    def drift(self, x, t):
        raise NotImplementedError("a subclass defines the drift f(x, t)")

    def diffusion(self, t):
        raise NotImplementedError("a subclass defines the diffusion g(t)")

    def reverse_drift(self, x, t, score_fn):
        raise NotImplementedError()


class StubEnergyScore(nn.Module):
    def __init__(self, energy_model):
        super().__init__()
        raise NotImplementedError()


def stub_dsm_loss(score_model, x, sigmas, generator=None):
    raise NotImplementedError()


def test_stubs_are_reported_as_not_implemented(ref04, student, monkeypatch):
    monkeypatch.setenv("COURSE_BUDGET", "grade")
    fails(checks.check_dsm_loss, student(stub_dsm_loss), match=r"dsm_loss\(score_model.* is not implemented yet")
    fails(checks.check_energy_score, student(StubEnergyScore), match=r"EnergyScore\(energy_model\) is not implemented yet")
    fails(checks.check_trained_annealed, student(stub_dsm_loss), student(ref04.EnergyScore),
          student(ref04.annealed_langevin), match=r"dsm_loss\(EnergyScore\(net\).* is not implemented yet")
    fails(checks.check_sde_classes, student(StubSDE), student(ref04.OrnsteinUhlenbeck),
          match=r"SDE.reverse_drift\(x, t, score_fn\) is not implemented yet")


# ------------------------------------------------------------ judged = local
@pytest.mark.parametrize("case", [
    lambda ref: (checks.check_log_prob, gm_variant(ref, log_prob=no_weights_log_prob)),
    lambda ref: (checks.check_score, gm_variant(ref, score=covariance_not_inverse_score)),
    lambda ref: (checks.check_sample, gm_variant(ref, sample=equal_weight_sample)),
    lambda ref: (checks.check_perturb, gm_variant(ref, perturb=in_place)),
    lambda ref: (checks.check_langevin, langevin_variant(noise=math.sqrt(2))),
    lambda ref: (checks.check_dsm_loss, dsm_variant(reduce_dims="mean")),
    lambda ref: (checks.check_dsm_loss, dsm_variant(per_batch=True)),
    lambda ref: (checks.check_energy_score, energy_score_variant(create_graph=False)),
    lambda ref: (checks.check_energy_score, energy_score_variant(copy_energy=True)),
    lambda ref: (checks.check_annealed_langevin, annealed_variant(sigma_shape="flat")),
    lambda ref: (checks.check_annealed_langevin, annealed_variant(step="constant")),
    lambda ref: (checks.check_sde_classes, *sde_variant(ref, lambda self, x, t, s: self.drift(x, t) - s(x, t) * t)),
    lambda ref: (checks.check_euler_maruyama_forward, em_variant(noise="unit"), ref.OrnsteinUhlenbeck),
    lambda ref: (checks.check_euler_maruyama_reverse, em_variant(time="end"), ref.OrnsteinUhlenbeck),
    lambda ref: (checks.check_variance_exploding, ve_variant(ref, lambda self, t: self.sigma(t)), ref.SDE),
    lambda ref: (checks.check_ve_reverse, ref.euler_maruyama, ve_variant(ref, lambda self, t: self.sigma(t))),
    lambda ref: (checks.check_probability_flow_ode, pf_variant(half=1.0), ref.OrnsteinUhlenbeck),
    lambda ref: (checks.check_predictor_corrector, pc_variant(corrector_time="old")),
    lambda ref: (checks.check_langevin, langevin_variant(draw="x's device")),
    lambda ref: (checks.check_dsm_loss, dsm_variant(sigma_device="cpu")),
    lambda ref: (checks.check_annealed_langevin, annealed_variant(sigma_device="cpu")),
    lambda ref: (checks.check_euler_maruyama_reverse, em_variant(t_device="cpu"), ref.OrnsteinUhlenbeck),
    lambda ref: (checks.check_variance_exploding, ve_sigma_through(ref, torch.float64), ref.SDE),
    lambda ref: (checks.check_variance_exploding, ve_sigma_through(ref, torch.float32), ref.SDE),
    lambda ref: (checks.check_predictor_corrector, pc_in_place(ref)),
], ids=["log_prob", "score", "sample", "perturb", "langevin", "dsm_mean", "dsm_one_sigma", "energy_score_graph",
        "energy_score_copy", "annealed_shape", "annealed_step", "reverse_drift", "em_forward", "em_reverse", "ve",
        "ve_reverse", "flow", "predictor_corrector", "langevin_device", "dsm_device", "annealed_device", "em_device",
        "ve_float64", "ve_float32", "predictor_corrector_in_place"])
def test_judged_message_is_the_local_message(ref04, judged, case):
    check, *answers = case(ref04)
    assert message(check, *map(judged, answers)) == message(check, *answers)
