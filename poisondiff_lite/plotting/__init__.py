"""Plots. Every function takes data (and optionally an `ax`) and returns the matplotlib Figure; none calls `show`.

`common`: style, colours, axes, images; `clean`: clean training and the metrics; `validation`: attacks and studies.
"""

from .common import BUCKET_COLORS, set_style, new_axes, to_hwc, symlog_scale, image_grid, short_name
from .clean import (
    epa_histogram,
    training_curves,
    correctness_map,
    per_class_bar,
    score_scatter,
    bucket_strip,
    delta_heatmap,
)
from .validation import (
    poison_comparison,
    asr_by_bucket,
    data_map,
    asr_vs_budget,
    metric_vs_asr,
    tau_against_attacks,
    headline,
)

__all__ = [
    "BUCKET_COLORS",
    "set_style",
    "new_axes",
    "to_hwc",
    "symlog_scale",
    "image_grid",
    "short_name",
    "epa_histogram",
    "training_curves",
    "correctness_map",
    "per_class_bar",
    "score_scatter",
    "bucket_strip",
    "delta_heatmap",
    "poison_comparison",
    "asr_by_bucket",
    "data_map",
    "asr_vs_budget",
    "metric_vs_asr",
    "tau_against_attacks",
    "headline",
]
