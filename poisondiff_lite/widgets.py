"""Interactive target explorer: pick a test image, see its training dynamics, δ and τ per class and attack outcomes.

Headless first: `target_figure` is a pure function returning a matplotlib Figure, so notebooks draw a static view that
papermill and nbval keep. `explorer` wraps the same function in ipywidgets (imported lazily) for JupyterLab; building
it never waits for input.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from .budget import TauSettings
from .distance import distance_matrix
from .errors import InvalidChoiceError
from .metrics import trajectory_metrics
from .plotting import short_name, symlog_scale, to_hwc
from .targets import target_rows
from .trajectory import Trajectory


@dataclass
class TargetView:
    """Everything the explorer shows about the recorded examples of one trajectory experiment.

    δ (all classes) and τ (toward `poison_class`) are computed on demand for the examples looked at, with `model`, and
    cached; attack outcomes come from saved studies of the same dataset.
    """

    traj: Trajectory  # the recorded clean runs
    images: torch.Tensor  # (E, 3, H, W) uint8 images of the recorded examples, in the trajectory's order
    classes: Sequence[str]  # class names
    model: torch.nn.Module | None = None  # a clean model for δ and τ (e.g. `load_run_model(path, 0)`)
    train_set: Any = None  # the clean training set, for τ
    poison_class: int = 1  # the class τ is computed toward
    studies: list = field(default_factory=list)  # `StudyResults` whose targets may include these examples
    tau_batches: int = 5  # batches estimating g(D_c; w_p) for τ (small: it runs on every selection)
    tau_all_classes: bool | None = None  # τ toward every class (None: when there are at most 20 classes)
    device: str | torch.device = "cpu"  # where δ and τ are computed
    _scores: dict | None = None
    _delta: dict = field(default_factory=dict)
    _tau: dict = field(default_factory=dict)  # (position, class) -> τ

    def __post_init__(self) -> None:
        if len(self.images) != self.traj.num_examples:
            raise InvalidChoiceError(
                f"{len(self.images)} images for {self.traj.num_examples} recorded examples; pass "
                f"split.images[traj.indices]"
            )

    @property
    def scores(self) -> dict[str, np.ndarray]:
        if self._scores is None:
            self._scores = trajectory_metrics(self.traj)
        return self._scores

    def position(self, index: int) -> int:
        """Position in the trajectory of test-set index `index`."""
        hits = np.flatnonzero(self.traj.indices == index)
        if len(hits) == 0:
            raise InvalidChoiceError(
                f"test index {index} was not recorded; recorded: {self.traj.indices.min()}..{self.traj.indices.max()}"
            )
        return int(hits[0])

    def ranked(self, label: int | None = None) -> np.ndarray:
        """Positions sorted by EPA, ascending (easiest to poison first), optionally of one class."""
        positions = np.arange(self.traj.num_examples)
        if label is not None:
            positions = positions[self.traj.labels == label]
        return positions[np.argsort(self.scores["epa"][positions], kind="stable")]

    def delta(self, pos: int) -> np.ndarray | None:
        """δ step toward every class (NaN for the own class), or None without a model."""
        if self.model is None:
            return None
        if pos not in self._delta:
            result = distance_matrix(
                self.model,
                self.images[pos : pos + 1],
                self.traj.labels[pos : pos + 1],
                device=self.device,
                show_progress=False,
            )
            self._delta[pos] = result.step[0]
        return self._delta[pos]

    def tau(self, pos: int, poison_class: int | None = None) -> float | None:
        """τ toward `poison_class` (default: the view's), or None without a model and a training set."""
        cls = self.poison_class if poison_class is None else int(poison_class)
        if self.model is None or self.train_set is None or int(self.traj.labels[pos]) == cls:
            return None
        if (pos, cls) not in self._tau:
            [row] = target_rows(
                self.model,
                self.scores,
                [{"index": int(self.traj.indices[pos])}],
                [pos],
                self.images[pos : pos + 1],
                [cls],
                self.train_set,
                tau=TauSettings(num_batches=self.tau_batches),
                device=self.device,
            )
            self._tau[(pos, cls)] = row["tau"]
        return self._tau[(pos, cls)]

    def tau_per_class(self, pos: int) -> np.ndarray | None:
        """τ toward every class (NaN for the own class; only the view's poison class when there are many classes)."""
        delta = self.delta(pos)
        if delta is None or self.train_set is None:
            return None
        every = self.tau_all_classes if self.tau_all_classes is not None else len(delta) <= 20
        classes = range(len(delta)) if every else [self.poison_class]
        out = np.full(len(delta), np.nan)
        for c in classes:
            value = self.tau(pos, c)
            out[c] = np.nan if value is None else value
        return out

    def outcomes(self, pos: int) -> list[dict[str, Any]]:
        """Attack results of saved studies whose target is this example."""
        index = int(self.traj.indices[pos])
        out = []
        for study in self.studies:
            if study.config.trajectory.dataset != self.traj.config.dataset:
                continue
            name = study.path.name if study.path else "study"  # a lab and a live study may share attack labels
            out += [
                {**r, "study": name, "label": f"{r['label']} [{name}]"}
                for r in study.per_target()
                if int(r["index"]) == index
            ]
        return out


def target_name(view: TargetView, pos: int) -> str:
    """How the explorer names the recorded example at `pos`: ``test #123: airplane`` (the figure's title starts so)."""
    return f"test #{int(view.traj.indices[pos])}: {short_name(view.classes[int(view.traj.labels[pos])], 30)}"


def target_figure(view: TargetView, index: int | None = None, *, position: int | None = None) -> Figure:
    """One page about one target (by test index, or by `position` in the trajectory).

    Panels: the image with its EPA and DPS; the true-class probability over epochs for every run (crosses: wrong
    predictions); δ toward every class (and τ toward the poison class); attack outcomes of saved studies.
    """
    pos = view.position(index) if index is not None else int(position if position is not None else 0)
    traj, scores = view.traj.finished(), view.scores
    label = int(traj.labels[pos])
    fig = plt.figure(figsize=(13, 8.5))
    grid = fig.add_gridspec(3, 3, width_ratios=(1, 1.6, 1.6), height_ratios=(1.3, 1, 1))

    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(to_hwc(view.images[pos]), interpolation="nearest")
    ax.axis("off")
    dominant = view.classes[int(scores["dominant"][pos])]
    ax.set_title(
        f"{target_name(view, pos)}\nEPA {scores['epa'][pos]:.3f} · "
        f"DPS {scores['dps'][pos]:.3f} ({short_name(dominant, 30)})",
        fontsize=9,
    )

    ax = fig.add_subplot(grid[0, 1:])
    epochs = np.arange(1, traj.num_epochs + 1)
    for m in range(traj.completed):
        (line,) = ax.plot(epochs, traj.true_prob[m, :, pos].astype(float), marker="o", ms=3, lw=1, label=f"run {m}")
        wrong = traj.preds[m, :, pos] != label
        ax.scatter(epochs[wrong], traj.true_prob[m, wrong, pos].astype(float), marker="x", s=40, color=line.get_color())
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("epoch")
    ax.set_ylabel("true-class probability")
    ax.set_title("training dynamics of every clean run (x: checkpoint predicted another class)", fontsize=9)
    if traj.completed <= 10:
        ax.legend(fontsize=7, ncol=2)

    ax = fig.add_subplot(grid[1, :2])
    tau_ax = fig.add_subplot(grid[2, :2], sharex=ax)
    delta = view.delta(pos)
    if delta is None:
        tau_ax.axis("off")
        ax.text(0.5, 0.5, "δ and τ: pass model= (and train_set=) to TargetView", ha="center", va="center")
        ax.axis("off")
    else:
        xs = np.arange(len(delta))
        colors = ["#d62728" if c == view.poison_class else "#4c72b0" for c in xs]
        ax.bar(xs, np.nan_to_num(np.where(np.isfinite(delta), delta, np.nan), nan=0.0), color=colors)
        ax.set_yscale("symlog", linthresh=1e-4)
        ax.set_ylabel("δ step η*")
        for c in np.flatnonzero(delta == 0):
            ax.text(c, 0, "already\npredicted", ha="center", va="bottom", fontsize=6)
        for c in np.flatnonzero(np.isinf(delta)):
            ax.text(c, 0, "never\nflips", ha="center", va="bottom", fontsize=6)
        poison = short_name(view.classes[view.poison_class], 30)
        ax.set_title(f"δ toward each class (red: {poison}, the study's poison class)", fontsize=9)
        ax.tick_params(labelbottom=False)
        tau = view.tau_per_class(pos)
        if tau is None:
            tau_ax.text(0.5, 0.5, "τ: pass train_set= to TargetView", ha="center", va="center")
            tau_ax.axis("off")
        else:
            tau_ax.bar(
                xs, np.nan_to_num(tau, nan=0.0), color=["#d62728" if c == view.poison_class else "#ff7f0e" for c in xs]
            )
            known = np.isfinite(tau)
            symlog_scale(tau_ax, tau)  # τ spans decades
            tau_ax.set_ylabel("τ (bound on poison ratio, log)")
            tau_ax.set_title(
                f"τ toward {'each class' if known.sum() > 1 else poison} (0: the bound does not bind)", fontsize=9
            )
        tau_ax.set_xticks(xs)
        tau_ax.set_xticklabels(
            [short_name(c, 30) for c in view.classes[: len(delta)]], rotation=45, ha="right", fontsize=7
        )
        if len(delta) > 30:
            tau_ax.set_xticks([])

    ax = fig.add_subplot(grid[1:, 2])
    outcomes = list({r["label"]: r for r in reversed(view.outcomes(pos))}.values())[::-1]  # one row per attack
    if not outcomes:
        ax.text(0.5, 0.5, "no saved study attacked\nthis target", ha="center", va="center")
        ax.axis("off")
    else:
        names = [r["label"] for r in outcomes]
        asr = np.array([r["asr"] for r in outcomes])
        low = asr - np.array([r["asr_low"] for r in outcomes])
        high = np.array([r["asr_high"] for r in outcomes]) - asr
        ax.barh(range(len(names)), asr, xerr=[low, high], color="#d62728", alpha=0.8, capsize=3)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=8)
        ax.set_xlim(0, 1.05)
        ax.set_xlabel("attack success rate (95 % interval)")
        ax.set_title("attack outcomes", fontsize=9)
    return fig


def explorer(view: TargetView, *, label: int | None = None) -> Any:
    """An ipywidgets explorer over `target_figure`: class filter, EPA-rank slider, easiest / hardest buttons.

    Returns the widget (display it, or let it be a cell's last value). Needs ``pip install ipywidgets``.
    """
    try:
        import ipywidgets as w
        from IPython.display import clear_output, display
    except ImportError as exc:  # pragma: no cover - ipywidgets is in the notebooks extra
        raise InvalidChoiceError("the explorer needs ipywidgets: pip install -e '.[notebooks]'") from exc
    present = sorted(set(int(c) for c in view.traj.labels))
    class_box = w.Dropdown(
        options=[("all classes", -1)] + [(str(view.classes[c])[:30], c) for c in present],
        value=-1 if label is None else label,
        description="class",
    )
    rank = w.IntSlider(min=0, max=1, value=0, description="EPA rank", continuous_update=False)
    easiest = w.Button(description="easiest", tooltip="lowest EPA: easiest to poison")
    hardest = w.Button(description="hardest", tooltip="highest EPA: hardest to poison")
    caption = w.HTML()  # names the target the figure shows (browsers and screen readers can read it; a PNG cannot)
    out = w.Output()

    def positions() -> np.ndarray:
        return view.ranked(None if class_box.value == -1 else class_box.value)

    def draw(*_: Any) -> None:
        with out:
            clear_output(wait=True)
            order = positions()
            shown = min(rank.value, len(order) - 1)
            pos = int(order[shown])
            caption.value = (
                f"<b>{html.escape(target_name(view, pos))}</b>, EPA rank {shown} of {len(order) - 1} "
                f"(0: easiest to poison), EPA {view.scores['epa'][pos]:.3f}"
            )
            target_figure(view, position=pos)
            plt.show()

    def on_class(*_: Any) -> None:
        # one message to the browser with the new range and the reset rank: set one by one, the slider in the page
        # clamps the old rank to the new range and sends it back after the reset (seen in JupyterLab 4)
        rank.unobserve(draw, names="value")
        with rank.hold_sync():
            rank.value = 0
            rank.max = max(len(positions()) - 1, 0)
        rank.observe(draw, names="value")
        draw()

    class_box.observe(on_class, names="value")
    rank.observe(draw, names="value")
    easiest.on_click(lambda _: setattr(rank, "value", 0))
    hardest.on_click(lambda _: setattr(rank, "value", rank.max))
    rank.max = max(len(positions()) - 1, 0)
    draw()
    widget = w.VBox([w.HBox([class_box, rank, easiest, hardest]), caption, out])
    display(widget)
    return widget


def target_table(view: TargetView, positions: Sequence[int]) -> list[dict[str, Any]]:
    """Rows for `format_table`: index, class, EPA, DPS, δ and τ toward the poison class (all from the explored
    experiment), and the best ASR of any saved attack with its study and the EPA that study measured (a lab study
    chose its targets by the EPA of its own, longer clean runs)."""
    rows = []
    for pos in positions:
        delta = view.delta(pos)
        attacked = [r for r in view.outcomes(pos) if not r["label"].startswith("no attack")]
        best = max(attacked, key=lambda r: r["asr"], default=None)
        rows.append(
            {
                "index": int(view.traj.indices[pos]),
                "class": short_name(view.classes[int(view.traj.labels[pos])], 30),
                "epa": float(view.scores["epa"][pos]),
                "dps": float(view.scores["dps"][pos]),
                "delta_step": float("nan") if delta is None else float(delta[view.poison_class]),
                "tau": float("nan") if view.tau(pos) is None else float(view.tau(pos)),
                "best_asr": float("nan") if best is None else best["asr"],
                "best_study": "-" if best is None else best["study"],
                "study_epa": float("nan") if best is None else float(best["epa"]),
            }
        )
    return rows


__all__ = ["TargetView", "explorer", "target_figure", "target_table"]
