"""What every figure shares: the style, the bucket colours, axes, image conversion, a log scale for δ and τ."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

BUCKET_COLORS = {
    "lowest": "#d62728",
    "p20": "#ff7f0e",
    "p40": "#bcbd22",
    "p60": "#2ca02c",
    "p80": "#17becf",
    "highest": "#1f77b4",
}
RIGHT_COLOR, WRONG_COLOR = "#0072b2", "#e69f00"  # correct / wrong: the Okabe-Ito blue and orange


def set_style() -> None:
    """One consistent look for all notebooks."""
    plt.rcParams.update(
        {
            "figure.dpi": 100,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "figure.autolayout": True,
        }
    )


def new_axes(ax: plt.Axes | None, figsize: tuple[float, float] = (6, 4)) -> tuple[Figure, plt.Axes]:
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


def short_name(name: str, width: int = 14) -> str:
    """A class name for a small title: the part before the first comma (TinyImageNet lists synonyms), wrapped at
    `width` characters instead of cut off."""
    return textwrap.fill(str(name).split(",")[0].strip(), width=width, break_long_words=False)


def image_grid(
    images: torch.Tensor | np.ndarray,
    titles: Sequence[str] | None = None,
    *,
    ncols: int = 10,
    scale: float = 1.3,
    suptitle: str | None = None,
) -> Figure:
    """Show ``(K, 3, H, W)`` images (uint8, or float in [0, 1]) in a grid with optional titles.

    Long title lines are wrapped to the image width and every row gets the height its titles need, so titles never
    overlap the images above them.
    """
    k = len(images)
    ncols = max(1, min(ncols, k))
    nrows = max(1, int(np.ceil(k / ncols)))
    width = max(10, int(scale * 16))  # characters per title line at fontsize 7
    if titles is not None:
        titles = [
            "\n".join(textwrap.fill(line, width=width, break_long_words=False) for line in str(t).split("\n"))
            for t in titles
        ]
    lines = max((t.count("\n") + 1 for t in titles), default=0) if titles is not None else 0
    row_height = scale + 0.14 * lines
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(scale * ncols, row_height * nrows + (0.45 if suptitle else 0)),
        squeeze=False,
        layout="constrained",
    )
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < k:
            ax.imshow(to_hwc(images[i]), interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle)
    return fig
