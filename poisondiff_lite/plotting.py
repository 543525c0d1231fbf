"""Plots. Every function takes data (and optionally an `ax`) and returns the matplotlib Figure; none calls `show`."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from .metrics import BUCKETS
from .study_config import METRIC_LABELS

BUCKET_COLORS = {"lowest": "#d62728", "p20": "#ff7f0e", "p40": "#bcbd22", "p60": "#2ca02c", "p80": "#17becf",
                 "highest": "#1f77b4"}


def set_style() -> None:
    """One consistent look for all notebooks."""
    plt.rcParams.update({"figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                         "axes.spines.right": False, "figure.autolayout": True})


def _axes(ax: plt.Axes | None, figsize: tuple[float, float] = (6, 4)) -> tuple[Figure, plt.Axes]:
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax


def to_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """One image as ``(H, W, 3)`` uint8 for `imshow`, from ``(3, H, W)`` uint8 or floats in [0, 1]."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(array * 255.0 if array.max() <= 1.0 else array, 0, 255).astype(np.uint8)
    return array.transpose(1, 2, 0)


def symlog_scale(ax: plt.Axes, values: Sequence[float] | np.ndarray, *, axis: str = "y") -> None:
    """A symmetric-log axis for δ or τ (they span decades and can be 0): linear below the smallest positive finite
    value, logarithmic above it."""
    values = np.asarray(values, dtype=float)
    positive = values[np.isfinite(values) & (values > 0)]
    linthresh = float(positive.min()) if len(positive) else 1e-3
    (ax.set_xscale if axis == "x" else ax.set_yscale)("symlog", linthresh=linthresh)


def image_grid(images: torch.Tensor | np.ndarray, titles: Sequence[str] | None = None, *, ncols: int = 10,
               scale: float = 1.3, suptitle: str | None = None) -> Figure:
    """Show ``(K, 3, H, W)`` images (uint8, or float in [0, 1]) in a grid with optional titles."""
    k = len(images)
    ncols = max(1, min(ncols, k))
    nrows = max(1, int(np.ceil(k / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows + (0.4 if suptitle else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < k:
            ax.imshow(to_hwc(images[i]), interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def epa_histogram(values: np.ndarray, *, bins: int = 20, label: str = "EPA", ax: plt.Axes | None = None,
                  title: str | None = None) -> Figure:
    """Histogram of a per-example score in [0, 1] with its quintile boundaries marked."""
    fig, ax = _axes(ax)
    ax.hist(values, bins=bins, range=(0, 1), color="#4c72b0", edgecolor="white")
    for q in (0.2, 0.4, 0.6, 0.8):
        ax.axvline(np.quantile(values, q), color="k", lw=0.8, ls="--", alpha=0.6)
    ax.set_xlabel(f"{label} (dashed: 20/40/60/80th percentiles)")
    ax.set_ylabel("examples")
    ax.set_title(title or f"{label} of {len(values)} examples (mean {np.mean(values):.3f})")
    return fig


def training_curves(eval_accuracy: np.ndarray, train_accuracy: np.ndarray | None = None, *,
                    ax: plt.Axes | None = None) -> Figure:
    """Accuracy after each epoch, one line per run (``(M, N)`` arrays)."""
    fig, ax = _axes(ax)
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


def correctness_map(correct: np.ndarray, *, row_labels: Sequence[str] | None = None,
                    ax: plt.Axes | None = None) -> Figure:
    """Per-example correctness at every checkpoint: ``correct`` is ``(M, N, K)`` for K chosen examples.

    Columns are checkpoints run by run (run boundaries marked); EPA is each row's mean.
    """
    m, n, k = correct.shape
    grid = correct.transpose(2, 0, 1).reshape(k, m * n).astype(float)
    fig, ax = _axes(ax, figsize=(8, 0.35 * k + 1.2))
    ax.imshow(grid, aspect="auto", cmap="RdYlGn", vmin=0, vmax=1, interpolation="nearest")
    for run in range(1, m):
        ax.axvline(run * n - 0.5, color="k", lw=1)
    ax.set_yticks(range(k))
    ax.set_yticklabels(row_labels if row_labels is not None else [str(i) for i in range(k)], fontsize=7)
    ax.set_xlabel(f"checkpoint (epoch ends of {m} runs x {n} epochs)")
    ax.set_title("green: classified correctly; EPA = share of green")
    ax.grid(False)
    return fig


def per_class_bar(values: np.ndarray, classes: Sequence[str], *, label: str = "mean EPA",
                  ax: plt.Axes | None = None) -> Figure:
    """Bar chart of one value per class, sorted ascending."""
    order = np.argsort(values)
    fig, ax = _axes(ax, figsize=(max(6, 0.5 * len(classes)), 4))
    ax.bar(range(len(order)), np.asarray(values)[order], color="#4c72b0")
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels([str(classes[i])[:14] for i in order], rotation=45, ha="right")
    ax.set_ylabel(label)
    ax.set_ylim(0, 1)
    return fig


def score_scatter(x: np.ndarray, y: np.ndarray, *, xlabel: str, ylabel: str, color: np.ndarray | None = None,
                  color_label: str | None = None, ax: plt.Axes | None = None) -> Figure:
    """Scatter of two per-example scores, optionally coloured by a third."""
    fig, ax = _axes(ax)
    points = ax.scatter(x, y, c=color, s=10, alpha=0.7, cmap="viridis" if color is not None else None)
    if color is not None:
        fig.colorbar(points, ax=ax, label=color_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig


def bucket_strip(epa_values: np.ndarray, buckets: dict[str, np.ndarray], *, ax: plt.Axes | None = None) -> Figure:
    """Where the six EPA buckets fall in the sorted EPA curve of the candidates."""
    fig, ax = _axes(ax)
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


def delta_heatmap(values: np.ndarray, classes: Sequence[str], *, row_labels: Sequence[str] | None = None,
                  label: str = "log10 δ (step η*)", ax: plt.Axes | None = None) -> Figure:
    """Targets x poison classes heatmap of log10 of a positive quantity (δ or τ); own class blank, ∞ marked ×."""
    values = np.asarray(values, dtype=float)
    shown = np.log10(np.where(np.isfinite(values) & (values > 0), values, np.nan))
    fig, ax = _axes(ax, figsize=(0.6 * len(classes) + 2.5, 0.22 * len(values) + 1.5))
    image = ax.imshow(shown, aspect="auto", cmap="magma_r", interpolation="nearest")
    fig.colorbar(image, ax=ax, label=label)
    rows, cols = np.nonzero(np.isinf(values))
    ax.scatter(cols, rows, marker="x", color="k", s=20, label="never flips" if len(rows) else None)
    zero_r, zero_c = np.nonzero(values == 0)
    ax.scatter(zero_c, zero_r, marker="o", facecolor="none", color="k", s=20,
               label="0 (already predicted)" if len(zero_r) else None)
    ax.set_xticks(range(len(classes)))
    ax.set_xticklabels([str(c)[:10] for c in classes], rotation=45, ha="right")
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
def poison_comparison(clean: torch.Tensor, poisoned: torch.Tensor, *, target: torch.Tensor | None = None,
                      count: int = 8, amplify: float | None = None, title: str | None = None) -> Figure:
    """Rows: clean base images, their poisoned versions, and the perturbation amplified to the full range.

    With `target`, the target image is shown at the left of the first row.
    """
    count = min(count, len(clean))
    diff = poisoned[:count].float() - clean[:count].float()
    scale = amplify or 127.0 / max(float(diff.abs().max()), 1.0)
    shown = (127.5 + scale * diff).clamp(0, 255).to(torch.uint8)
    offset = 1 if target is not None else 0
    fig, axes = plt.subplots(3, count + offset, figsize=(1.25 * (count + offset), 4.1), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if target is not None:
        axes[0, 0].imshow(to_hwc(target), interpolation="nearest")
        axes[0, 0].set_title("target", fontsize=8, color="#d62728")
    for j in range(count):
        for row, (images, name) in enumerate([(clean, "clean"), (poisoned, "poisoned"), (shown, f"Δ x{scale:.0f}")]):
            axes[row, j + offset].imshow(to_hwc(images[j]), interpolation="nearest")
            if j == 0:
                axes[row, j + offset].set_title(name, fontsize=8, loc="left")
    if title:
        fig.suptitle(title)
    return fig


def asr_by_bucket(rows: Sequence[dict], *, ax: plt.Axes | None = None, title: str | None = None) -> Figure:
    """Mean ASR per EPA bucket, one bar group per bucket and one bar per attack; whiskers: pooled Wilson 95 % interval.

    `rows` are `StudyResults.by_bucket()` rows (keys ``label``, ``bucket``, ``mean_asr``, ``pooled_low/high``).
    """
    fig, ax = _axes(ax, figsize=(8, 4))
    order = list(BUCKETS) + ["δ-low", "δ-high", "τ-low", "τ-high"]  # easiest to hardest by EPA, then extremes
    buckets = sorted(dict.fromkeys(r["bucket"] for r in rows), key=lambda b: order.index(b) if b in order else 99)
    labels = list(dict.fromkeys(r["label"] for r in rows))
    width = 0.8 / max(len(labels), 1)
    for k, label in enumerate(labels):
        mine = {r["bucket"]: r for r in rows if r["label"] == label}
        xs = [i + (k - (len(labels) - 1) / 2) * width for i, b in enumerate(buckets) if b in mine]
        means = [mine[b]["mean_asr"] for b in buckets if b in mine]
        low = [mine[b]["mean_asr"] - mine[b]["pooled_low"] for b in buckets if b in mine]
        high = [mine[b]["pooled_high"] - mine[b]["mean_asr"] for b in buckets if b in mine]
        hatch = "//" if label.startswith("no attack") else None
        bars = ax.bar(xs, means, width=width * 0.95, yerr=[low, high], capsize=3, label=label, hatch=hatch,
                      alpha=0.55 if hatch else 0.9)
        ax.scatter(xs, means, marker="D", s=14, zorder=3, color=bars.patches[0].get_facecolor() if bars.patches
                   else None, edgecolor="k", linewidth=0.4)  # a zero ASR stays visible
    ax.set_xticks(range(len(buckets)))
    ax.set_xticklabels(buckets)
    ax.set_xlabel("EPA bucket of the target (left: easiest by EPA)")
    ax.set_ylabel("attack success rate")
    ax.set_ylim(-0.04, 1.05)  # room for the markers of a zero ASR
    ax.legend(fontsize=8)
    ax.set_title(title or "ASR by EPA bucket (whiskers: Wilson 95 % interval over all victims)")
    return fig


def data_map(epa: np.ndarray, dps: np.ndarray, asr: np.ndarray, *, labels: Sequence[str] | None = None,
             ax: plt.Axes | None = None, title: str | None = None) -> Figure:
    """Data-Maps-style view of the targets: EPA (x) against DPS (y), coloured by attack success."""
    fig, ax = _axes(ax, figsize=(6, 4.5))
    points = ax.scatter(epa, dps, c=asr, cmap="RdYlBu_r", vmin=0, vmax=1, s=45, edgecolor="k", linewidth=0.5)
    fig.colorbar(points, ax=ax, label="attack success rate")
    if labels is not None:
        for x, y, text in zip(epa, dps, labels):
            ax.annotate(str(text), (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("EPA (how often the clean checkpoints were right)")
    ax.set_ylabel("DPS (how stable the dominant prediction was)")
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(0, 1.03)
    ax.set_title(title or "targets: easy (red) and hard (blue) to poison")
    return fig


def asr_vs_budget(budgets: Sequence[float], groups: dict[str, Sequence[float]], *, xlabel: str = "poisons",
                  ax: plt.Axes | None = None, title: str | None = None) -> Figure:
    """Mean ASR against the poison budget, one line per target group (e.g. low- and high-EPA targets)."""
    fig, ax = _axes(ax)
    for name, values in groups.items():
        ax.plot(budgets, values, marker="o", label=name, color=BUCKET_COLORS.get(name))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean attack success rate")
    ax.set_ylim(-0.03, 1.03)
    ax.legend()
    ax.set_title(title or "attack success against budget")
    return fig


def metric_vs_asr(per_target: Sequence[dict], correlations: Sequence[dict], *,
                  metrics: Sequence[str] = ("epa", "dps", "delta_step", "tau"), title: str | None = None) -> Figure:
    """One panel per metric: each target's metric value against its ASR, one colour per attack.

    `per_target` and `correlations` are `StudyResults.per_target()` / `.correlations()` rows; each legend entry
    carries that attack's Spearman ρ with its permutation p-value. δ and τ span orders of magnitude, so their axes are
    logarithmic (symlog, since τ can be 0). Baseline ("no attack") rows are drawn in grey.
    """
    names = {**METRIC_LABELS, "tau": "τ (poison ratio, log scale)"}
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8), squeeze=False, sharey=True)
    labels = list(dict.fromkeys(r["label"] for r in per_target))
    stats = {(c["label"], c["metric"]): c for c in correlations}
    rng = np.random.default_rng(0)
    for ax, metric in zip(axes[0], metrics):
        for k, label in enumerate(labels):
            mine = [r for r in per_target if r["label"] == label]
            x = np.array([r[metric] for r in mine], dtype=float)
            y = np.array([r["asr"] for r in mine]) + rng.uniform(-0.015, 0.015, len(mine))  # separate equal ASRs
            stat = stats.get((label, metric))
            if stat is None:
                legend = label
            elif np.isfinite(stat["spearman"]):
                legend = f"{label}: ρ {stat['spearman']:+.2f} (p {stat['spearman_p']:.2g})"
            else:
                legend = f"{label}: ρ n/a (constant ASR)"
            grey = label.startswith("no attack")
            ax.scatter(x, y, s=16, alpha=0.5 if grey else 0.8, label=legend, color="0.6" if grey else f"C{k}",
                       edgecolor="k", linewidth=0.2)
        if metric in ("delta_step", "delta_param", "tau"):
            symlog_scale(ax, [r[metric] for r in per_target], axis="x")
        ax.set_xlabel(names.get(metric, metric))
        ax.legend(fontsize=7, loc="center right")  # the points sit near ASR 0 and 1; the middle is the emptiest
    axes[0][0].set_ylabel("ASR of the target")
    axes[0][0].set_ylim(-0.05, 1.12)
    fig.suptitle(title or "each target's metric against its attack success (ρ: Spearman, p: permutation test)")
    return fig


def headline(rows_by_dataset: dict[str, Sequence[dict]]) -> Figure:
    """The headline figure: ASR by EPA bucket, per attack (bars) and dataset (panels)."""
    datasets = list(rows_by_dataset) or ["(no study saved yet)"]
    fig, axes = plt.subplots(1, len(datasets), figsize=(7.5 * len(datasets), 4.2), squeeze=False)
    for ax, name in zip(axes[0], datasets):
        rows = rows_by_dataset.get(name, [])
        if rows:
            asr_by_bucket(rows, ax=ax, title=f"{name}: attack success by target group")
        else:
            ax.text(0.5, 0.5, "no study saved yet: run notebooks 05 and 06", ha="center", va="center")
            ax.axis("off")
    return fig
