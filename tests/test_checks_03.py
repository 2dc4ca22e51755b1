"""The checkers of assignment 03 pass the reference and fail plausible wrong answers, in the student's own kernel
(local) and as grading runs them (judged: the answers live in a separate stand-in kernel, behind Remote handles)."""
import math

import pytest
import torch

from conftest import fails, message
from helpers import budgets
from helpers.checks import a03 as checks


@pytest.fixture
def grade(monkeypatch):
    monkeypatch.setenv("COURSE_BUDGET", "grade")


@pytest.fixture
def short_checks(grade, monkeypatch):
    """Shorter training inside the training checks: the wrong versions below fail at any length."""
    sizes = dict(budgets.SIZES["03"]["grade"], check_ebm_iters=300, check_mnist_iters=15)
    monkeypatch.setitem(budgets.SIZES["03"], "grade", sizes)


# ------------------------------------------------------------------ sgld_sample
def backward_style_sgld(energy, x0, n_steps, step_size, noise_std=None, clamp=None):
    """A correct sampler written with .backward() and in-place updates on a float64 copy."""
    noise = math.sqrt(2 * step_size) if noise_std is None else noise_std
    x = x0.detach().to(torch.float64).clone()
    for _ in range(n_steps):
        x.requires_grad_(True)
        energy(x.to(x0.dtype)).sum().backward()
        with torch.no_grad():
            x -= step_size * x.grad
            x += noise * torch.randn_like(x)
            if clamp is not None:
                x.clamp_(clamp[0], clamp[1])
        x.grad = None
    return x.detach().to(x0.dtype)


def test_sgld_reference_and_other_style_pass(ref03, student):
    for seed in (0, 1, 2):
        checks.check_sgld_sample(student(ref03.sgld_sample), seed=seed)
    checks.check_sgld_sample(student(backward_style_sgld), seed=3)


def make_sgld(sign=-1.0, grad_scale=1.0, noise=lambda h: math.sqrt(2 * h), default_by_or=False, clamp_each=True,
              use_clamp=True, detach=True, use_noise_std=True):
    def sgld(energy, x0, n_steps, step_size, noise_std=None, clamp=None):
        if default_by_or:
            std = noise_std or noise(step_size)
        else:
            std = noise(step_size) if noise_std is None or not use_noise_std else noise_std
        x = x0.detach().clone()
        for _ in range(n_steps):
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad(energy(x).sum(), x)
            x = x.detach() + sign * grad_scale * step_size * grad + std * torch.randn_like(x)
            if clamp is not None and use_clamp and clamp_each:
                x = x.clamp(*clamp)
        if clamp is not None and use_clamp and not clamp_each:
            x = x.clamp(*clamp)
        return x.detach() if detach else x.requires_grad_(True) * 1.0
    return sgld


@pytest.mark.parametrize("wrong, message", [
    (make_sgld(sign=+1.0), "moves \\*up\\*"),
    (make_sgld(grad_scale=0.5, noise=lambda h: math.sqrt(h)), "half a gradient step"),
    (make_sgld(noise=lambda h: 0.0), "noise term .* is missing"),
    (make_sgld(noise=lambda h: math.sqrt(h)), "not sqrt\\(step_size\\)"),
    (make_sgld(default_by_or=True), "is None"),
    (make_sgld(use_noise_std=False), "use the noise_std you are given"),
    (make_sgld(clamp_each=False), "only once"),
    (make_sgld(use_clamp=False), "ignores clamp"),
    (make_sgld(detach=False), "requires grad"),
])
def test_sgld_wrong_fails(wrong, message, student):
    fails(checks.check_sgld_sample, student(wrong), match=message)


def test_sgld_updating_x0_in_place_fails(student):
    def in_place(energy, x0, n_steps, step_size, noise_std=None, clamp=None):
        std = math.sqrt(2 * step_size) if noise_std is None else noise_std
        x = x0.detach()  # shares memory with x0: every update below overwrites the caller's starting points
        for _ in range(n_steps):
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad(energy(x).sum(), x)
            x = x.detach()
            x -= step_size * grad - std * torch.randn_like(x)
            if clamp is not None:
                x.clamp_(*clamp)
        return x.clone()

    fails(checks.check_sgld_sample, student(in_place), match="in place")


def test_sgld_not_implemented_is_reported(student):
    def stub(energy, x0, n_steps, step_size, noise_std=None, clamp=None):
        raise NotImplementedError()

    fails(checks.check_sgld_sample, student(stub), match="not implemented yet")


# --------------------------------------------------------------- initial_chains
def numpy_style_chains(strategy, n, data, previous=None, noise_scale=5.0, generator=None):
    """Correct, written differently: multinomial draws for the data rows, normal_ for the noise."""
    if strategy == "persistent" and previous is not None:
        return previous.clone()
    if strategy == "data":
        index = torch.multinomial(torch.ones(len(data)), n, replacement=True, generator=generator)
        return data[index].clone()
    return torch.empty(n, *data.shape[1:], dtype=data.dtype).normal_(0.0, noise_scale, generator=generator)


def test_initial_chains_reference_and_other_style_pass(ref03, student):
    for seed in (0, 1):
        checks.check_initial_chains(student(ref03.initial_chains), seed=seed)
    checks.check_initial_chains(student(numpy_style_chains), seed=2, n=3000, m=25)


def variant_chains(ref03, **change):
    def chains(strategy, n, data, previous=None, noise_scale=5.0, generator=None):
        if change.get("unit_noise"):
            noise_scale = 1.0
        if strategy == "persistent" and previous is not None and not change.get("ignore_previous"):
            return previous
        if strategy in ("persistent", "noise"):
            if change.get("uniform"):
                return noise_scale * torch.rand(n, *data.shape[1:], generator=generator, dtype=data.dtype)
            if change.get("global_rng"):
                return noise_scale * torch.randn(n, *data.shape[1:], dtype=data.dtype)
            if change.get("float32"):
                return noise_scale * torch.randn(n, *data.shape[1:], generator=generator)
            return noise_scale * torch.randn(n, *data.shape[1:], generator=generator, dtype=data.dtype)
        if change.get("first_rows"):
            return data[:n]
        if change.get("permutation"):
            return data[torch.randperm(len(data), generator=generator)[:n]]
        return data[torch.randint(len(data), (n,), generator=generator)]
    return chains


@pytest.mark.parametrize("change, message", [
    (dict(unit_noise=True), "noise_scale=5.0"),
    (dict(uniform=True), "torch.rand is uniform"),
    (dict(ignore_previous=True), "should return x"),
    (dict(first_rows=True), "replacement"),
    (dict(permutation=True), "replacement"),
    (dict(global_rng=True), "generator=generator"),
    (dict(float32=True), "keep the data's dtype"),
])
def test_initial_chains_wrong_fails(ref03, change, message, student):
    fails(checks.check_initial_chains, student(variant_chains(ref03, **change)), match=message)


# --------------------------------------------------------------------- ebm_loss
def test_ebm_loss_reference_and_other_style_pass(ref03, student):
    checks.check_ebm_loss(student(ref03.ebm_loss))
    checks.check_ebm_loss(student(ref03.ebm_loss), seed=3, n_data=4, n_model=11)

    def one_pass(energy, x_data, x_model, alpha=0.0):
        e = energy(torch.cat([x_data, x_model]))
        e_data, e_model = e[:len(x_data)], e[len(x_data):]
        return e_data.mean() - e_model.mean() + alpha * (e_data.pow(2).mean() + e_model.pow(2).mean())

    checks.check_ebm_loss(student(one_pass), seed=1)


def _loss_variant(kind):
    def loss(energy, x_data, x_model, alpha=0.0):
        e_d, e_m = energy(x_data), energy(x_model)
        if kind == "sign":
            return e_m.mean() - e_d.mean() + alpha * ((e_d**2).mean() + (e_m**2).mean())
        if kind == "no alpha":
            return e_d.mean() - e_m.mean()
        if kind == "squared means":
            return e_d.mean() - e_m.mean() + alpha * (e_d.mean() ** 2 + e_m.mean() ** 2)
        if kind == "pooled":
            return e_d.mean() - e_m.mean() + alpha * (torch.cat([e_d, e_m]) ** 2).mean()
        if kind == "sums":
            return e_d.sum() - e_m.sum() + alpha * ((e_d**2).sum() + (e_m**2).sum())
        if kind == "item":
            return (e_d.mean() - e_m.mean() + alpha * ((e_d**2).mean() + (e_m**2).mean())).item()
        if kind == "detached data":
            return e_d.detach().mean() - e_m.mean() + alpha * ((e_d.detach() ** 2).mean() + (e_m**2).mean())
    return loss


@pytest.mark.parametrize("kind, message", [
    ("sign", "sign is flipped"),
    ("no alpha", "alpha is ignored"),
    ("squared means", "mean of the squared energies"),
    ("pooled", "pooled"),
    ("sums", "summed, not averaged"),
    ("item", "scalar tensor"),
    ("detached data", "wrong gradient"),
])
def test_ebm_loss_wrong_fails(kind, message, student):
    fails(checks.check_ebm_loss, student(_loss_variant(kind)), match=message)


# -------------------------------------------------------------------- train_ebm
def variant_trainer(ref03, **change):
    """The reference loop with one deliberate flaw."""
    def train(energy, data, n_iters, chain_length, init="persistent", step_size=0.1, lr=1e-2, generator=None):
        optimizer = torch.optim.Adam(energy.parameters(), lr=1e-2 if change.get("fixed_lr") else lr)
        chains, losses = None, []
        for _ in range(n_iters):
            strategy = "persistent" if change.get("ignore_init") else init
            previous = None if change.get("restart") else chains
            start = ref03.initial_chains(strategy, len(data), data, previous=previous, generator=generator)
            chains = ref03.sgld_sample(energy, start, chain_length, step_size,
                                       noise_std=0.0 if change.get("no_noise") else None)
            loss = ref03.ebm_loss(energy, chains, data) if change.get("sign") else ref03.ebm_loss(energy, data, chains)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return {"loss": losses, "samples": chains}
    return train


def test_train_ebm_reference_passes(ref03, student):
    checks.check_train_ebm(student(ref03.train_ebm))


@pytest.mark.parametrize("change, message", [
    (dict(ignore_init=True), "rows of the data"),
    (dict(restart=True), "previous"),
    (dict(fixed_lr=True), "lr argument"),
    (dict(sign=True), "away"),
])
def test_train_ebm_wrong_fails(ref03, change, message, student):
    fails(checks.check_train_ebm, student(variant_trainer(ref03, **change)), match=message)


def test_trained_ebm_2d_reference_passes(ref03, grade, student):
    checks.check_trained_ebm_2d(student(ref03.train_ebm), student(ref03.sgld_sample))


@pytest.mark.parametrize("change, message", [
    (dict(sign=True), "mode"),
    (dict(no_noise=True), "too narrow|mode"),
])
def test_trained_ebm_2d_wrong_fails(ref03, short_checks, change, message, student):
    fails(checks.check_trained_ebm_2d, student(variant_trainer(ref03, **change)), student(ref03.sgld_sample), match=message)


def test_trained_ebm_2d_judged_message_is_the_local_message(ref03, short_checks, judged):
    answers = (variant_trainer(ref03, no_noise=True), ref03.sgld_sample)
    assert message(checks.check_trained_ebm_2d, *map(judged, answers)) == message(checks.check_trained_ebm_2d, *answers)


# -------------------------------------------------------------------- EnergyCNN
def test_energy_cnn_reference_passes(ref03, student):
    checks.check_energy_cnn(student(ref03.EnergyCNN))


def test_energy_cnn_wrong_fails(ref03, student):
    class KeepsAxis(ref03.EnergyCNN):
        def forward(self, x):
            return self.net(x)

    class WithBatchNorm(ref03.EnergyCNN):
        def __init__(self):
            super().__init__()
            self.norm = torch.nn.BatchNorm2d(1)

        def forward(self, x):
            return self.net(self.norm(x)).squeeze(-1)

    class DetachedInput(ref03.EnergyCNN):
        def forward(self, x):
            return self.net(x.detach()).squeeze(-1)

    class UnusedLayer(ref03.EnergyCNN):
        def __init__(self):
            super().__init__()
            self.extra = torch.nn.Linear(3, 3)

    class NotAModule:
        def __call__(self, x):
            return x.flatten(1).sum(1)

    fails(checks.check_energy_cnn, student(KeepsAxis), match="squeeze")
    fails(checks.check_energy_cnn, student(WithBatchNorm), match="BatchNorm")
    fails(checks.check_energy_cnn, student(DetachedInput), match="input image")
    fails(checks.check_energy_cnn, student(UnusedLayer), match="receive no gradient")
    fails(checks.check_energy_cnn, student(NotAModule), match="subclass torch.nn.Module")


# ----------------------------------------------------------------- ReplayBuffer
def test_replay_buffer_reference_passes(ref03, student):
    checks.check_replay_buffer(student(ref03.ReplayBuffer))
    checks.check_replay_buffer(student(ref03.ReplayBuffer), seed=9, capacity=50, n=3000)


class ListBuffer:
    """A correct buffer written with a deque and an exact count of fresh images."""

    def __init__(self, capacity, shape):
        from collections import deque
        self.items, self.shape = deque(maxlen=capacity), tuple(shape)

    def push(self, x):
        self.items.extend(x.detach().cpu().clone().unbind(0))

    def sample(self, n, reinit_prob=0.05, generator=None):
        out = torch.rand(n, *self.shape, generator=generator) * 2 - 1
        if self.items:
            picks = torch.randint(len(self.items), (n,), generator=generator)
            stored = torch.rand(n, generator=generator) >= reinit_prob
            for i in torch.nonzero(stored).flatten().tolist():
                out[i] = self.items[int(picks[i])]
        return out


def test_replay_buffer_other_style_passes(student):
    checks.check_replay_buffer(student(ListBuffer))


def variant_buffer(**change):
    class Buffer:
        def __init__(self, capacity, shape):
            self.capacity, self.shape = capacity, tuple(shape)
            self.images = torch.empty(0, *self.shape)

        def push(self, x):
            images = torch.cat([self.images, x.float() if change.get("keep_graph") else x.detach().float()])
            if change.get("no_capacity"):
                self.images = images
            elif change.get("keep_oldest"):
                self.images = images[:self.capacity]
            else:
                self.images = images[-self.capacity:]

        def sample(self, n, reinit_prob=0.05, generator=None):
            if change.get("gaussian"):
                fresh = torch.randn(n, *self.shape, generator=generator)
            elif change.get("unit_interval"):
                fresh = torch.rand(n, *self.shape, generator=generator)
            else:
                fresh = torch.rand(n, *self.shape, generator=generator) * 2 - 1
            if len(self.images) == 0:
                return fresh
            g = None if change.get("global_rng") else generator
            stored = self.images[torch.randint(len(self.images), (n,), generator=g)]
            p = 1 - reinit_prob if change.get("keep_prob") else reinit_prob
            if change.get("per_pixel"):
                keep = torch.rand(n, *self.shape, generator=generator) >= p
                return torch.where(keep, stored, fresh)
            keep = torch.rand(n, generator=generator) >= p
            return torch.where(keep.view(-1, *[1] * len(self.shape)), stored, fresh)
    return Buffer


@pytest.mark.parametrize("change, message", [
    (dict(gaussian=True), "not randn"),
    (dict(unit_interval=True), "\\* 2 - 1"),
    (dict(no_capacity=True), "oldest"),
    (dict(keep_oldest=True), "oldest"),
    (dict(keep_prob=True), "stored image"),
    (dict(per_pixel=True), "mix stored pixels"),
    (dict(global_rng=True), "generator"),
    (dict(keep_graph=True), "store detached copies"),
])
def test_replay_buffer_wrong_fails(change, message, student):
    fails(checks.check_replay_buffer, student(variant_buffer(**change)), match=message)


# -------------------------------------------------------------------- MNIST EBM
def test_mnist_ebm_reference_passes(ref03, grade, student):
    checks.check_mnist_ebm(student(ref03.EnergyCNN), student(ref03.ReplayBuffer), student(ref03.train_mnist_ebm))


def variant_mnist_trainer(ref03, **change):
    def train(model, images, n_iters, batch_size=64, n_steps=20, step_size=10.0, noise_std=0.005, lr=1e-4,
              alpha=0.1, buffer=None, generator=None):
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.0, 0.999))
        losses = []
        for _ in range(n_iters):
            real = images[torch.randint(len(images), (batch_size,), generator=generator)]
            samples = ref03.sgld_sample(model, buffer.sample(batch_size, generator=generator), n_steps, step_size,
                                        noise_std=noise_std, clamp=(-1.0, 1.0))
            buffer.push(samples)
            loss = ref03.ebm_loss(model, samples, real, alpha) if change.get("sign") else \
                ref03.ebm_loss(model, real, samples, alpha)
            optimizer.zero_grad()
            loss.backward()
            if not change.get("no_step"):
                optimizer.step()
            losses.append(loss.item())
        return {"loss": losses, "samples": samples, "buffer": buffer}
    return train


@pytest.mark.parametrize("change, message", [
    (dict(sign=True), "loss sign is flipped"),
    (dict(no_step=True), "barely moved"),
])
def test_mnist_ebm_wrong_fails(ref03, short_checks, change, message, student):
    fails(checks.check_mnist_ebm, student(ref03.EnergyCNN), student(ref03.ReplayBuffer),
          student(variant_mnist_trainer(ref03, **change)), match=message)


# ------------------------------------------------------------ compose_energies
def stacked_style(energies, op="and", alpha=1.0):
    """Correct, written differently: a class, log K subtracted in OR (a constant), logsumexp by hand with the max."""
    if op == "not" and len(energies) != 2:
        raise ValueError("NOT takes [E_base, E_neg]")

    class Composed(torch.nn.Module):
        def forward(self, x):
            E = torch.stack([e(x) for e in energies], dim=1)
            if op == "and":
                return E.sum(1)
            if op == "or":
                m = (-E).max(1, keepdim=True).values
                return -(m.squeeze(1) + torch.log(torch.exp(-E - m).mean(1)))
            return E[:, 0] - alpha * E[:, 1]

    return Composed()


def make_compose(and_=None, or_=None, not_=None, check_two=True):
    """The reference with one operation replaced by a wrong formula over the stacked energies E [K, B]."""
    formulas = {"and": and_ or (lambda E, a: E.sum(0)), "or": or_ or (lambda E, a: -torch.logsumexp(-E, 0)),
                "not": not_ or (lambda E, a: E[0] - a * E[1])}

    def compose(energies, op="and", alpha=1.0):
        if check_two and op == "not" and len(energies) != 2:
            raise ValueError("NOT takes [E_base, E_neg]")
        return lambda x: formulas[op](torch.stack([e(x) for e in energies]), alpha)
    return compose


def lazy_compose(energies, op="and", alpha=1.0):
    """Right formulas, but NOT's ValueError comes only when the returned function is called."""
    composed = make_compose(check_two=False)(energies, op, alpha)

    def energy(x):
        if op == "not" and len(energies) != 2:
            raise ValueError("NOT takes [E_base, E_neg]")
        return composed(x)
    return energy


def test_compose_energies_reference_and_other_style_pass(ref03, student):
    for seed in (0, 1, 2):
        checks.check_compose_energies(student(ref03.compose_energies), seed=seed)
    checks.check_compose_energies(student(stacked_style), seed=3)


@pytest.mark.parametrize("wrong, message", [
    (make_compose(or_=lambda E, a: E.sum(0)), "this is AND"),
    (make_compose(or_=lambda E, a: E.min(0).values), "minimum of the energies"),
    (make_compose(or_=lambda E, a: -torch.log(torch.exp(-E).sum(0))), "torch.logsumexp"),
    (make_compose(or_=lambda E, a: torch.logsumexp(E, 0)), "signs inside logsumexp"),
    (make_compose(not_=lambda E, a: -a * E[1]), "base energy is missing"),
    (make_compose(not_=lambda E, a: -a * E[-1], check_two=False), "base energy is missing"),
    (make_compose(not_=lambda E, a: E[0] - E[1]), "α is ignored"),
    (make_compose(not_=lambda E, a: E[0] + a * E[1]), "negated energy is added"),
    (make_compose(and_=lambda E, a: E.mean(0)), "not their mean"),
    (make_compose(and_=lambda E, a: E[0] + E[1]), "AND is"),
    (make_compose(or_=lambda E, a: -torch.logsumexp(-E, 0).detach()), "detached"),
    (make_compose(check_two=False), "should raise a ValueError"),
    (lazy_compose, "raise in compose_energies itself, before returning"),
])
def test_compose_energies_wrong_fails(wrong, message, student):
    fails(checks.check_compose_energies, student(wrong), match=message)


# ------------------------------------------------------------ the release's stubs
def stub_ebm_loss(energy, x_data, x_model, alpha=0.0):
    raise NotImplementedError()


class StubEnergyCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 1))

    def forward(self, x):
        raise NotImplementedError()


def stub_compose_energies(energies, op="and", alpha=1.0):
    raise NotImplementedError()


def test_stubs_are_reported_as_not_implemented(student):
    fails(checks.check_ebm_loss, student(stub_ebm_loss), match=r"ebm_loss\(energy, .* is not implemented yet")
    fails(checks.check_energy_cnn, student(StubEnergyCNN), match=r"EnergyCNN\(\)\(x\) is not implemented yet")
    fails(checks.check_compose_energies, student(stub_compose_energies),
          match=r"compose_energies\(.* is not implemented yet")


# ------------------------------------------------------------ judged = local
class DetachedInputCNN(torch.nn.Module):
    """An energy that ignores its input's gradient: the check's probe must see it in the kernel."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 1))

    def forward(self, x):
        return self.net(x.detach()).squeeze(-1)


@pytest.mark.parametrize("check, wrong", [
    (checks.check_sgld_sample, lambda ref: make_sgld(noise=lambda h: math.sqrt(h))),
    (checks.check_initial_chains, lambda ref: variant_chains(ref, unit_noise=True)),
    (checks.check_ebm_loss, lambda ref: _loss_variant("detached data")),
    (checks.check_ebm_loss, lambda ref: _loss_variant("sign")),
    (checks.check_train_ebm, lambda ref: variant_trainer(ref, restart=True)),
    (checks.check_energy_cnn, lambda ref: DetachedInputCNN),
    (checks.check_replay_buffer, lambda ref: variant_buffer(per_pixel=True)),
    (checks.check_compose_energies, lambda ref: make_compose(or_=lambda E, a: -torch.logsumexp(-E, 0).detach())),
    (checks.check_compose_energies, lambda ref: make_compose(not_=lambda E, a: E[0] + a * E[1])),
    (checks.check_compose_energies, lambda ref: lazy_compose),
])
def test_judged_message_is_the_local_message(ref03, judged, check, wrong):
    answer = wrong(ref03)
    assert message(check, judged(answer)) == message(check, answer)
