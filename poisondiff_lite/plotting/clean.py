"""Figures of clean training and of the metrics: EPA, DPS, δ and τ, correctness maps, target buckets."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .common import BUCKET_COLORS, RIGHT_COLOR, WRONG_COLOR, new_axes, short_name


def epa_histogram(
    values: np.ndarray, *, bins: int = 20, label: str = "EPA", ax: plt.Axes | None = None, title: str | None = None
) -> Figure:
    """Histogram of a per-example score in [0, 1] with its quintile boundaries marked."""
    fig, ax = new_axes(ax)
    ax.hist(values, bins=bins, range=(0, 1), color="#4c72b0", edgecolor="white")
    for q in (0.2, 0.4, 0.6, 0.8):
        ax.axvline(np.quantile(values, q), color="k", lw=0.8, ls="--", alpha=0.6)
    ax.set_xlabel(f"{label} (dashed: 20/40/60/80th percentiles)")
    ax.set_ylabel("examples")
    ax.set_title(title or f"{label} of {len(values)} examples (mean {np.mean(values):.3f})")
    return fig


def training_curves(
    eval_accuracy: np.ndarray, train_accuracy: np.ndarray | None = None, *, ax: plt.Axes | None = None
) -> Figure:
    """Accuracy after each epoch, one line per run (``(M, N)`` arrays)."""
    fig, ax = new_axes(ax)
    epochs = np.arange(1, eval_accuracy.shape[1] + 1)
    for m, row in enumerate(eval_accuracy):
        ax.plot(epochs, row, color="C0", alpha=0.7, label="recorded examples" if m == 0 else None)
    if train_accuracy is not None:
        for m, row in enumerate(train_accuracy):
            ax.plot(epochs, row, color="C1", alpha=0.5, ls="--", label="training batches" if m == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"{eval_accuracy.shape[0]} clean runs")
    ax.legend()
    return fig


def correctness_map(
    correct: np.ndarray, *, row_labels: Sequence[str] | None = None, ax: plt.Axes | None = None
) -> Figure:
    """Per-example correctness at every checkpoint: ``correct`` is ``(M, N, K)`` for K chosen examples.

    Columns are checkpoints run by run (run boundaries marked); EPA is each row's mean.
    """
    m, n, k = correct.shape
    grid = correct.transpose(2, 0, 1).reshape(k, m * n).astype(float)
    fig, ax = new_axes(ax, figsize=(8, 0.35 * k + 1.2))
    colors = ListedColormap([WRONG_COLOR, RIGHT_COLOR])  # orange / blue: distinguishable with any colour vision
    ax.imshow(grid, aspect="auto", cmap=colors, vmin=0, vmax=1, interpolation="nearest")
    for run in range(1, m):
        ax.axvline(run * n - 0.5, color="k", lw=1)
    ax.set_yticks(range(k))
    ax.set_yticklabels(row_labels if row_labels is not None else [str(i) for i in range(k)], fontsize=7)
    ax.set_xlabel(f"checkpoint (epoch ends of {m} runs x {n} epochs)")
    ax.legend(
        handles=[Patch(color=RIGHT_COLOR, label="correct"), Patch(color=WRONG_COLOR, label="wrong")],
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        fontsize=8,
    )
    ax.set_title("each row: one image at every checkpoint; EPA = share of blue (correct)")
    ax.grid(False)
    return fig


def per_class_bar(
    values: np.ndarray, classes: Sequence[str], *, label: str = "mean EPA", ax: plt.Axes | None = None
) -> Figure:
    """Bar chart of one value per class, sorted ascending."""
    order = np.argsort(values)
    fig, ax = new_axes(ax, figsize=(max(6, 0.5 * len(classes)), 4))
    ax.bar(range(len(order)), np.asarray(values)[order], color="#4c72b0")
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels([short_name(classes[i], 24) for i in order], rotation=45, ha="right")
    ax.set_ylabel(label)
    ax.set_ylim(0, 1)
    return fig


def score_scatter(
    x: np.ndarray,
    y: np.ndarray,
    *,
    xlabel: str,
    ylabel: str,
    color: np.ndarray | None = None,
    color_label: str | None = None,
    ax: plt.Axes | None = None,
) -> Figure:
    """Scatter of two per-example scores, optionally coloured by a third."""
    fig, ax = new_axes(ax)
    points = ax.scatter(x, y, c=color, s=10, alpha=0.7, cmap="viridis" if color is not None else None)
    if color is not None:
        fig.colorbar(points, ax=ax, label=color_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig


def bucket_strip(epa_values: np.ndarray, buckets: dict[str, np.ndarray], *, ax: plt.Axes | None = None) -> Figure:
    """Where the six EPA buckets fall in the sorted EPA curve of the candidates."""
    fig, ax = new_axes(ax)
    order = np.argsort(epa_values, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    ax.plot(np.arange(len(order)), np.asarray(epa_values)[order], color="0.6", lw=1, label="all candidates")
    for name, positions in buckets.items():
        ax.scatter(rank[positions], np.asarray(epa_values)[positions], s=14, color=BUCKET_COLORS.get(name), label=name)
    ax.set_xlabel("rank by EPA (ascending)")
    ax.set_ylabel("EPA")
    ax.legend(fontsize=8, ncol=2)
    return fig


def delta_heatmap(
    values: np.ndarray,
    classes: Sequence[str],
    *,
    row_labels: Sequence[str] | None = None,
    label: str = "log10 δ (step η*)",
    ax: plt.Axes | None = None,
) -> Figure:
    """Targets x poison classes heatmap of log10 of a positive quantity (δ or τ); own class blank, ∞ marked ×."""
    values = np.asarray(values, dtype=float)
    shown = np.log10(np.where(np.isfinite(values) & (values > 0), values, np.nan))
    fig, ax = new_axes(ax, figsize=(0.6 * len(classes) + 2.5, 0.22 * len(values) + 1.5))
    image = ax.imshow(shown, aspect="auto", cmap="magma_r", interpolation="nearest")
    fig.colorbar(image, ax=ax, label=label)
    rows, cols = np.nonzero(np.isinf(values))
    ax.scatter(cols, rows, marker="x", color="k", s=20, label="never flips" if len(rows) else None)
    zero_r, zero_c = np.nonzero(values == 0)
    ax.scatter(
        zero_c,
        zero_r,
        marker="o",
        facecolor="none",
        color="k",
        s=20,
        label="0 (already predicted)" if len(zero_r) else None,
    )
    ax.set_xticks(range(len(classes)))
    ax.set_xticklabels([short_name(c, 24) for c in classes], rotation=45, ha="right")
    if row_labels is not None:
        ax.set_yticks(range(len(values)))
        ax.set_yticklabels(row_labels, fontsize=6)
    ax.set_xlabel("poison class")
    ax.grid(False)
    if len(rows) or len(zero_r):
        ax.legend(fontsize=7, loc="upper right")
    return fig


# -----------------------------------------------------------------------------------------------------------------
#  attack validation
# -----------------------------------------------------------------------------------------------------------------
