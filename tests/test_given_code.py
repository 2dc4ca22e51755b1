"""Code the notebooks give (not graded) does what their text says."""
import nbformat
import torch
from torch import nn

from conftest import source_notebook


def given_cell(assignment: str, marker: str) -> dict:
    """Run the one code cell of the source notebook containing ``marker``; return its namespace."""
    cells = [c.source for c in nbformat.read(source_notebook(assignment), as_version=4).cells
             if c.cell_type == "code" and marker in c.source]
    assert len(cells) == 1, f"{assignment}: {len(cells)} code cells contain {marker!r}"
    namespace = {"torch": torch, "nn": nn}
    exec(cells[0], namespace)
    return namespace


def test_clip_input_gradient_clamps_only_the_gradient_in_the_input():
    """03: the sampler sees ∇ₓE clamped to [−c, c]; energies and the parameters' gradients are the bare model's."""
    ClipInputGradient = given_cell("03", "class ClipInputGradient")["ClipInputGradient"]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 1))
    with torch.no_grad():
        model[1].weight.mul_(50)  # steep enough that many pixels' gradients exceed the clip
    clipped = ClipInputGradient(model, 0.03)
    assert list(clipped.parameters()) == list(model.parameters())

    x = torch.rand(4, 1, 28, 28, requires_grad=True)
    (bare_grad,) = torch.autograd.grad(model(x).sum(), x)
    (clipped_grad,) = torch.autograd.grad(clipped(x).sum(), x)
    assert (bare_grad.abs() > 0.03).float().mean() > 0.5
    assert torch.equal(clipped_grad, bare_grad.clamp(-0.03, 0.03))
    assert torch.equal(clipped(x), model(x))

    data = torch.rand(8, 1, 28, 28)
    bare = torch.autograd.grad(model(data).mean(), list(model.parameters()))
    through = torch.autograd.grad(clipped(data).mean(), list(model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(bare, through))
