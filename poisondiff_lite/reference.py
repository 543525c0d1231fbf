"""The authors' reported numbers, to compare against (arXiv 2509.06896; from the raw tables of their code release,
goodzcyabc/targeted-poisoning-difficulty).

These are what the authors' own pipeline produced (ResNet-18 / VGG-16 on GPUs, full data sets, 8 victims), not
guaranteed paper-figure values. Keys of bucket tables are the `metrics.BUCKETS` names.
"""

from __future__ import annotations

# CIFAR-10 ResNet-18, GM, airplane -> automobile, budget 1 %, eps 16/255, 8 victims: mean ASR, pop. std, n targets
CIFAR10_GM_BY_BUCKET = {
    "lowest": (1.000, 0.000, 10),
    "p20": (0.975, 0.050, 10),
    "p40": (0.929, 0.131, 7),
    "p60": (0.825, 0.251, 10),
    "p80": (0.484, 0.439, 8),
    "highest": (0.542, 0.368, 9),
}
CIFAR10_GM_EPA_RANGES = {
    "lowest": "0.003-0.025",
    "p20": "0.491-0.506",
    "p40": "0.722-0.731",
    "p60": "0.853-0.859",
    "p80": "0.941-0.944",
    "highest": "0.997-1.000",
}
CIFAR10_GM_POOLED = {"pearson_epa": -0.484, "spearman_epa": -0.597, "n": 54}

# CIFAR-10 ResNet-18, 200 airplane targets, EPA/DPS from 8 x 100 epochs: Pearson(ASR, metric)
CIFAR10_CORRELATIONS = {"GM": {"epa": -0.143849, "dps": -0.094689}, "BP": {"epa": -0.511412, "dps": -0.389801}}

# CIFAR-10 ResNet-18, GM budget sweep (fraction of the training set): (group, budget) -> mean ASR
CIFAR10_GM_BUDGET_SWEEP = {
    ("high EPA", 0.01): 0.6375,
    ("high EPA", 0.015): 0.700,
    ("high EPA", 0.02): 0.775,
    ("high EPA", 0.03): 0.7125,
    ("high EPA", 0.05): 0.725,
    ("low EPA", 0.001): 0.700,
    ("low EPA", 0.0025): 0.975,
    ("low EPA", 0.005): 0.975,
    ("low EPA", 0.0075): 0.950,
    ("low EPA", 0.01): 1.000,
}

# TinyImageNet VGG-16, goldfish -> salamander (y_p = 1), 4 targets per group: mean ASR (GM, BP)
TINYIMAGENET_BY_GROUP = {
    "high": {"GM": 0.656, "BP": 0.719},
    "middle": {"GM": 0.844, "BP": 0.625},
    "low": {"GM": 0.281, "BP": 0.344},
}
# the matching EPA buckets of our studies
TINYIMAGENET_GROUP_OF_BUCKET = {"lowest": "low", "p40": "middle", "highest": "high"}

# TinyImageNet VGG-16, GM, top-4 vs bottom-4 targets by δ: mean ASR
TINYIMAGENET_DELTA_GROUPS = {"top-4 δ (hardest)": 0.6875, "bottom-4 δ (easiest)": 0.65625}

# prior work, for sanity checks
PRIOR_WORK = {
    "Witches' Brew GM, CIFAR-10 ResNet-18, 1 %, 16/255, random pairs": "about 90 % ASR",
    "Poisoning benchmark FC, transfer (frozen features), 25 poisons, 8/255": "16-22 %",
    "Poisoning benchmark BP, transfer (frozen features), white-box": "85 %",
    "Poisoning benchmark FC / BP, from scratch, ResNet-18": "0 % / 3 %",
}


def cifar10_gm_rows() -> list[dict]:
    """The CIFAR-10 GM bucket table as rows (for `study.format_table`)."""
    return [
        {
            "bucket": b,
            "authors_mean_asr": m,
            "authors_std": s,
            "authors_targets": n,
            "authors_epa": CIFAR10_GM_EPA_RANGES[b],
        }
        for b, (m, s, n) in CIFAR10_GM_BY_BUCKET.items()
    ]
