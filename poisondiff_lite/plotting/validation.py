"""Figures of attacks and studies: poisons beside their bases, ASR per bucket, metric against ASR, Data Maps."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from ..metrics import BUCKETS
from ..study_config import METRIC_LABELS
from .common import BUCKET_COLORS, new_axes, symlog_scale, to_hwc


def poison_comparison(
    clean: torch.Tensor,
    poisoned: torch.Tensor,
    *,
    target: torch.Tensor | None = None,
    count: int = 8,
    amplify: float | None = None,
    title: str | None = None,
) -> Figure:
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
    fig, ax = new_axes(ax, figsize=(8, 4))
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
        bars = ax.bar(
            xs,
            means,
            width=width * 0.95,
            yerr=[low, high],
            capsize=3,
            label=label,
            hatch=hatch,
            alpha=0.55 if hatch else 0.9,
        )
        ax.scatter(
            xs,
            means,
            marker="D",
            s=14,
            zorder=3,
            color=bars.patches[0].get_facecolor() if bars.patches else None,
            edgecolor="k",
            linewidth=0.4,
        )  # a zero ASR stays visible
    ax.set_xticks(range(len(buckets)))
    ax.set_xticklabels(buckets)
    ax.set_xlabel("EPA bucket of the target (left: easiest by EPA)")
    ax.set_ylabel("attack success rate")
    ax.set_ylim(-0.04, 1.05)  # room for the markers of a zero ASR
    ax.legend(fontsize=8)
    ax.set_title(title or "ASR by EPA bucket (whiskers: Wilson 95 % interval over all victims)")
    return fig


def data_map(
    epa: np.ndarray,
    dps: np.ndarray,
    asr: np.ndarray,
    *,
    labels: Sequence[str] | None = None,
    ax: plt.Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Data-Maps-style view of the targets: EPA (x) against DPS (y), coloured by attack success."""
    fig, ax = new_axes(ax, figsize=(6, 4.5))
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


def asr_vs_budget(
    budgets: Sequence[float],
    groups: dict[str, Sequence[float]],
    *,
    xlabel: str = "poisons",
    ax: plt.Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Mean ASR against the poison budget, one line per target group (e.g. low- and high-EPA targets)."""
    fig, ax = new_axes(ax)
    for name, values in groups.items():
        ax.plot(budgets, values, marker="o", label=name, color=BUCKET_COLORS.get(name))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean attack success rate")
    ax.set_ylim(-0.03, 1.03)
    ax.legend()
    ax.set_title(title or "attack success against budget")
    return fig


def metric_vs_asr(
    per_target: Sequence[dict],
    correlations: Sequence[dict],
    *,
    metrics: Sequence[str] = ("epa", "dps", "delta_step", "tau"),
    title: str | None = None,
) -> Figure:
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
            ax.scatter(
                x,
                y,
                s=16,
                alpha=0.5 if grey else 0.8,
                label=legend,
                color="0.6" if grey else f"C{k}",
                edgecolor="k",
                linewidth=0.2,
            )
        if metric in ("delta_step", "delta_param", "tau"):
            symlog_scale(ax, [r[metric] for r in per_target], axis="x")
        ax.set_xlabel(names.get(metric, metric))
        ax.legend(fontsize=7, loc="center right")  # the points sit near ASR 0 and 1; the middle is the emptiest
    axes[0][0].set_ylabel("ASR of the target")
    axes[0][0].set_ylim(-0.05, 1.12)
    fig.suptitle(title or "each target's metric against its attack success (ρ: Spearman, p: permutation test)")
    return fig


def tau_against_attacks(rows: Sequence[dict], *, ax: plt.Axes | None = None, title: str | None = None) -> Figure:
    """Each attacked target's τ (symlog) against its ASR, with the poison ratio its attack used as a dashed line.

    `rows` are `tau_evidence.tau_against_attacks` rows. A point right of its line with ASR > 0 (red edge) is a
    target hijacked with fewer poisons than τ says it needs: a counterexample to reading τ as a bound.
    """
    fig, ax = new_axes(ax)
    rng = np.random.default_rng(0)
    for k, label in enumerate(dict.fromkeys(r["label"] for r in rows)):
        mine = [r for r in rows if r["label"] == label]
        x = np.array([r["tau"] for r in mine])
        y = np.array([r["asr"] for r in mine]) + rng.uniform(-0.015, 0.015, len(mine))
        edge = ["red" if r["below_tau"] else "k" for r in mine]
        ax.scatter(x, y, s=24, color=f"C{k}", edgecolor=edge, linewidth=[1.5 if e == "red" else 0.3 for e in edge])
        ratio = mine[0]["ratio"]
        ax.axvline(ratio, color=f"C{k}", linestyle="--", linewidth=1, label=f"{label}: {ratio:.3g}")
    x_values = [r["tau"] for r in rows] + [r["ratio"] for r in rows]
    symlog_scale(ax, x_values, axis="x")
    ax.set_xlim(-0.3 * ax.xaxis.get_transform().linthresh, 2 * max(x_values))  # τ = 0 at the left edge, none below
    ax.set_xlabel("τ: the poison ratio it claims is needed (symlog)")
    ax.set_ylabel("ASR of the target")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=8, title="attack: poison ratio used", title_fontsize=8)
    ax.set_title(title or "red edge: hijacked although ratio < τ")
    return fig


def headline(panels: dict[str, Sequence[dict]], *, ncols: int = 2) -> Figure:
    """The headline figure: ASR by EPA bucket, per attack (bars), one panel per entry of `panels` (title -> the
    `by_bucket` rows; `artifacts.headline_panels` gives one per study), `ncols` panels per row."""
    titles = list(panels) or ["(no study saved yet)"]
    ncols = max(1, min(ncols, len(titles)))
    nrows = -(-len(titles) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(7.5 * ncols, 4.4 * nrows), squeeze=False)
    for ax in axes.flat[len(titles) :]:
        ax.axis("off")
    for ax, title in zip(axes.flat, titles):
        rows = panels.get(title, [])
        if rows:
            asr_by_bucket(rows, ax=ax, title=textwrap.fill(title, 70))
        else:
            ax.text(0.5, 0.5, "no study saved yet: run notebooks 05 and 06", ha="center", va="center")
            ax.axis("off")
    return fig
