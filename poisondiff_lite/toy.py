"""A 2-D, 3-class linear softmax problem where δ and τ can be seen: the parameter step moves decision boundaries.

For a linear model the δ step is exact theory (the logits move linearly in η) and τ is the bound of Lu et al. in the
setting it was derived for, so the notebooks build intuition here before moving to deep networks.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.figure import Figure


CENTERS = ((-1.5, 0.0), (1.5, 0.0), (0.0, 2.2))
COLORS = ("#d62728", "#1f77b4", "#2ca02c")


def blobs(n_per_class: int = 60, *, spread: float = 0.9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three Gaussian blobs in 2-D: points ``(N, 2)`` float32 and labels ``(N,)``."""
    gen = torch.Generator().manual_seed(seed)
    points = [torch.tensor(c) + spread * torch.randn(n_per_class, 2, generator=gen) for c in CENTERS]
    labels = [torch.full((n_per_class,), k) for k in range(len(CENTERS))]
    return torch.cat(points).float(), torch.cat(labels)


def fit_linear(
    points: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int = 300,
    lr: float = 0.5,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> nn.Linear:
    """Full-batch gradient descent on a linear softmax model ``z = W x + b``."""
    torch.manual_seed(seed)
    model = nn.Linear(points.shape[1], int(labels.max()) + 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(points), labels).backward()
        optimizer.step()
    return model.eval()


def stepped(model: nn.Linear, point: torch.Tensor, poison_class: int, eta: float) -> nn.Linear:
    """A copy of `model` moved by ``-eta * ∇ CE(model(point), poison_class)``: the δ step at size eta."""
    moved = nn.Linear(model.in_features, model.out_features)
    moved.load_state_dict(model.state_dict())
    loss = F.cross_entropy(moved(point[None]), torch.tensor([poison_class]))
    grads = torch.autograd.grad(loss, list(moved.parameters()))
    with torch.no_grad():
        for p, g in zip(moved.parameters(), grads):
            p -= eta * g
    return moved.eval()


def decision_regions(
    model: nn.Module,
    points: torch.Tensor,
    labels: torch.Tensor,
    *,
    target: torch.Tensor | None = None,
    ax: plt.Axes | None = None,
    title: str = "",
) -> Figure:
    """Colour the plane by the model's prediction; draw the data and (as a star) the target."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 4))
    fig = ax.figure
    lo, hi = points.min(0).values - 1, points.max(0).values + 1
    xs, ys = torch.meshgrid(torch.linspace(lo[0], hi[0], 300), torch.linspace(lo[1], hi[1], 300), indexing="xy")
    with torch.no_grad():
        pred = model(torch.stack([xs.flatten(), ys.flatten()], 1)).argmax(1).reshape(xs.shape)
    from matplotlib.colors import ListedColormap

    ax.contourf(xs, ys, pred, levels=[-0.5, 0.5, 1.5, 2.5], cmap=ListedColormap(COLORS), alpha=0.18)
    ax.contour(xs, ys, pred, levels=[0.5, 1.5], colors="k", linewidths=0.6)
    for k, color in enumerate(COLORS):
        sel = labels == k
        ax.scatter(points[sel, 0], points[sel, 1], s=8, color=color, label=f"class {k}")
    if target is not None:
        ax.scatter(
            [float(target[0])],
            [float(target[1])],
            marker="*",
            s=300,
            color="gold",
            edgecolor="k",
            zorder=5,
            label="target",
        )
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.grid(False)
    return fig


def logit_path(
    model: nn.Linear,
    point: torch.Tensor,
    poison_class: int,
    etas: np.ndarray,
    *,
    step: float | None = None,
    ax: plt.Axes | None = None,
) -> Figure:
    """The target's logits along the δ direction, with the flip η* marked."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.5))
    fig = ax.figure
    logits = np.stack([stepped(model, point, poison_class, float(e))(point[None]).detach().numpy()[0] for e in etas])
    for k in range(logits.shape[1]):
        ax.plot(
            etas,
            logits[:, k],
            color=COLORS[k % len(COLORS)],
            label=f"logit {k}" + (" (poison)" if k == poison_class else ""),
            lw=2.5 if k == poison_class else 1.2,
        )
    if step is not None:
        ax.axvline(step, color="k", ls="--", lw=1, label=f"η* = {step:.3f}")
    ax.set_xlabel("step η along -∇ CE(target, poison class)")
    ax.set_ylabel("logit")
    ax.legend(fontsize=8)
    return fig
