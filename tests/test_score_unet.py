"""The MNIST score U-Net of 04's bonus: the interface the students' functions rely on, and what the notebook says of it."""
import pytest
import torch

from conftest import reference_answers
from helpers.noise import geometric_sigmas
from helpers.score_unet import ScoreUNet, max_pairwise_distance


@pytest.fixture(scope="module")
def ref():
    return reference_answers("04")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return ScoreUNet()


def test_takes_flat_images_and_a_level_per_row_or_one_for_all(net):
    x = torch.rand(5, 784)
    per_row = net(x, torch.full((5, 1), 0.3))
    assert per_row.shape == (5, 784) and per_row.dtype == torch.float32
    assert torch.allclose(net(x, 0.3), per_row, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[B, 784\]"):
        net(torch.rand(5, 1, 28, 28), torch.full((5, 1), 0.3))


def test_the_score_is_tweedies_and_the_dsm_loss_a_denoising_error(net, ref):
    """The notebook says: s = (D − x̃)/σ², so ½‖σ·s(x + σz) + z‖² = ‖D(x + σz) − x‖²/(2σ²) for every image."""
    g = torch.Generator().manual_seed(1)
    x, z = torch.rand(6, 784, generator=g), torch.randn(6, 784, generator=g)
    sigma = torch.tensor([[0.01], [0.05], [0.2], [1.0], [5.0], [20.0]])
    noisy = x + sigma * z
    with torch.no_grad():
        score, denoised = net(noisy, sigma), net.denoise(noisy, sigma)
        assert torch.allclose(score, (denoised - noisy) / sigma**2, rtol=1e-4, atol=1e-3)
        dsm = 0.5 * ((sigma * score + z) ** 2).sum(1)
        assert torch.allclose(dsm, ((denoised - x) ** 2).sum(1) / (2 * sigma[:, 0] ** 2), rtol=1e-3)
    # The students' dsm_loss on this model is finite and has gradients for every parameter.
    loss = ref.dsm_loss(net, x, geometric_sigmas(0.01, 20.0, 50), generator=g)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in net.parameters())
    net.zero_grad()


def test_the_students_samplers_run_on_it(net, ref):
    g = torch.Generator().manual_seed(2)
    start = 20.0 * torch.randn(3, 784, generator=g)
    with torch.no_grad():
        langevin = ref.annealed_langevin(net, start, geometric_sigmas(0.01, 20.0, 3), 5e-5, 2, generator=g)
        ve = ref.VarianceExploding(0.01, 20.0)
        sde = ref.euler_maruyama(ve, start, 1.0, 0.0, 4, score_fn=lambda x, t: net(x, ve.sigma(t)), generator=g)
    assert langevin.shape == sde.shape == (3, 784)
    assert torch.isfinite(langevin).all() and torch.isfinite(sde).all()


def test_a_short_training_lowers_the_dsm_loss(ref):
    """Sixty steps on MNIST already lower the held-out DSM loss well below its start (measured: to about a quarter)."""
    from helpers.data import load_mnist

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    images = load_mnist("train")[0][:2000].view(-1, 784)
    levels = geometric_sigmas(0.01, 20.0, 100)
    model = ScoreUNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)

    def held_out_loss():
        with torch.no_grad():
            return ref.dsm_loss(model, images[:256], levels, generator=torch.Generator().manual_seed(9)).item()

    before = held_out_loss()
    for _ in range(60):
        loss = ref.dsm_loss(model, images[torch.randint(len(images), (32,), generator=g)], levels, generator=g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert held_out_loss() < 0.6 * before


def test_max_pairwise_distance():
    points = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    assert max_pairwise_distance(points, n=3) == pytest.approx(5.0)
    images = torch.rand(50, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    assert max_pairwise_distance(images, n=50) == pytest.approx(float(torch.pdist(images.view(50, -1)).max()), rel=1e-6)
