"""Figures the notebooks share. Each function draws on an Axes (or makes one) and returns it."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch


def use_course_style() -> None:
    sns.set_theme(context="notebook", style="whitegrid")
    plt.rcParams.update({"figure.dpi": 100, "figure.figsize": (6.4, 4.2), "image.cmap": "gray"})


def _numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def scatter_by_label(points, labels, ax=None, title=None, s=12, alpha=0.8, legend_title=None):
    """2-D points coloured by a discrete label (species, digit …), with a legend."""
    points, labels = _numpy(points), _numpy(labels)
    ax = ax or plt.gca()
    palette = sns.color_palette("tab10", n_colors=max(len(np.unique(labels)), 3))
    sns.scatterplot(x=points[:, 0], y=points[:, 1], hue=labels, palette=palette, s=s, alpha=alpha,
                    linewidth=0, ax=ax, legend="full")
    ax.legend(title=legend_title, loc="best", fontsize="small", markerscale=1.5)
    ax.set(title=title, xlabel="component 1", ylabel="component 2")
    return ax


def explained_variance(ratios, ax=None, title="Explained variance"):
    """Bars of the explained-variance ratio per component and a line of their running sum (in %)."""
    ratios = 100 * _numpy(ratios).astype(float)
    ks = np.arange(1, len(ratios) + 1)
    ax = ax or plt.gca()
    ax.bar(ks, ratios, color="tab:blue", alpha=0.7, label="per component")
    ax.plot(ks, np.cumsum(ratios), "o-", color="tab:orange", label="cumulative")
    for k, total in zip(ks, np.cumsum(ratios)):
        ax.annotate(f"{total:.2f} %", (k, total), textcoords="offset points", xytext=(0, 6), ha="center", fontsize="small")
    ax.set(xticks=ks, xlabel="number of components k", ylabel="variance explained (%)", ylim=(0, 110), title=title)
    ax.legend(loc="center right")
    return ax


def image_rows(rows, row_titles=None, col_titles=None, size=1.2, suptitle=None):
    """Images in a grid, one list (or [N, 1, H, W] tensor) per row; returns the figure."""
    rows = [_numpy(r).reshape(len(r), *_numpy(r).shape[-2:]) for r in rows]
    n_cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(size * n_cols, size * len(rows) + 0.4), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([]), ax.set_yticks([])
            ax.grid(False)
            if j < len(row):
                ax.imshow(row[j], cmap="gray", vmin=0, vmax=1)
            else:
                ax.axis("off")
            if col_titles is not None and i == 0 and j < len(col_titles):
                ax.set_title(str(col_titles[j]), fontsize="small")
        if row_titles is not None:
            axes[i, 0].set_ylabel(row_titles[i], rotation=0, ha="right", va="center", fontsize="small")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def image_grid(images, nrow=8, title=None, ax=None, value_range=(0, 1)):
    """Many images tiled into one picture (torchvision's ``make_grid``)."""
    from torchvision.utils import make_grid

    images = torch.as_tensor(_numpy(images)).float()
    grid = make_grid(images, nrow=nrow, padding=2, pad_value=1.0, normalize=True, value_range=value_range)
    ax = ax or plt.gca()
    ax.imshow(grid.permute(1, 2, 0).numpy())
    ax.set_axis_off()
    ax.set_title(title)
    return ax


# ---------------------------------------------------------------- 2-D densities and score fields (assignment 04)
def grid_2d(lim, n=100, dtype=torch.float32):
    """An ``n × n`` grid over ``lim = (xmin, xmax, ymin, ymax)``: ``(X, Y, points [n², 2])``."""
    X, Y = np.meshgrid(np.linspace(lim[0], lim[1], n), np.linspace(lim[2], lim[3], n))
    return X, Y, torch.as_tensor(np.stack([X.ravel(), Y.ravel()], axis=1), dtype=dtype)


def density_and_score(log_prob_fn, score_fn, lim, ax=None, title=None, n_grid=120, n_arrows=24):
    """The density ``exp(log_prob)`` as an image and the score as arrows coloured by their length (``np.hypot``).

    ``log_prob_fn`` and ``score_fn`` map points ``[n, 2]`` to ``[n]`` and ``[n, 2]``. Arrows are drawn with a
    common length so that their directions stay readable; the colour tells the magnitude.
    """
    ax = ax or plt.gca()
    X, Y, points = grid_2d(lim, n_grid)
    density = np.exp(_numpy(log_prob_fn(points))).reshape(X.shape)
    ax.imshow(density, origin="lower", extent=lim, cmap="Blues", aspect="auto")
    Xa, Ya, arrows = grid_2d(lim, n_arrows)
    score = _numpy(score_fn(arrows)).reshape(n_arrows, n_arrows, 2)
    U, V = score[..., 0], score[..., 1]
    length = np.hypot(U, V)
    quiver = ax.quiver(Xa, Ya, U / (length + 1e-12), V / (length + 1e-12), length, cmap="plasma", norm=_log_norm(length),
                       scale=n_arrows * 1.2, width=0.004)
    plt.colorbar(quiver, ax=ax, label="‖score‖")
    ax.set(title=title, xlim=lim[:2], ylim=lim[2:], xlabel="$x_1$", ylabel="$x_2$")
    ax.grid(False)
    return ax


def _log_norm(values):
    from matplotlib.colors import LogNorm

    positive = values[values > 0]
    return LogNorm(vmin=max(positive.min(), 1e-3), vmax=positive.max()) if positive.size else None


def hist2d(points, lim, ax=None, title=None, bins=128):
    """A 2-D histogram of ``points [n, 2]`` over ``lim = (xmin, xmax, ymin, ymax)`` (``plt.hist2d``, 128 bins)."""
    points = _numpy(points)
    ax = ax or plt.gca()
    ax.hist2d(points[:, 0], points[:, 1], bins=bins, range=[lim[:2], lim[2:]], cmap="viridis")
    ax.set(title=title, xlabel="$x_1$", ylabel="$x_2$", aspect="equal")
    ax.grid(False)
    return ax


def samples_2d(points, ax=None, title=None, lim=7.0, color="tab:blue", s=2, alpha=0.5):
    """A scatter plot of 2-D samples on the square [-lim, lim]², equal axes (for data vs EBM samples)."""
    points = _numpy(points)
    ax = ax or plt.gca()
    ax.scatter(points[:, 0], points[:, 1], s=s, alpha=alpha, color=color, linewidths=0)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title=title, xlabel="$x_1$", ylabel="$x_2$")
    return ax


def energy_landscape(energy, ax=None, lim=7.0, n=150, title=None, density=False):
    """Filled contours of a 2-D energy E(x) on a grid, or of exp(-E) normalised on the grid when ``density``."""
    axis = torch.linspace(-lim, lim, n)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1).reshape(-1, 2)
    param = next(iter(energy.parameters()), None) if isinstance(energy, torch.nn.Module) else None
    if param is not None:
        grid = grid.to(param.device, param.dtype)
    with torch.no_grad():
        values = energy(grid).reshape(n, n).double().cpu()
    if density:
        values = torch.exp(-(values - values.min()))
        values = values / values.sum()
    ax = ax or plt.gca()
    filled = ax.contourf(axis.numpy(), axis.numpy(), values.numpy(), levels=30, cmap="viridis" if density else "magma")
    plt.colorbar(filled, ax=ax, shrink=0.8, label="density on the grid" if density else "energy")
    ax.set(aspect="equal", title=title, xlabel="$x_1$", ylabel="$x_2$")
    return ax
