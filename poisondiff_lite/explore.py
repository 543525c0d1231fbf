"""The target explorer on saved results: `saved_view` builds the `TargetView` of the longest saved clean experiment
of a dataset (recording the quick runs when none is saved) with every saved and shipped study of it; `serve` shows
the explorer as a standalone web page with Voilà (``poisondiff explore``: no code cells, only the widgets).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from .artifacts import saved_trajectories
from .errors import PoisonDiffError, ResultsFileError
from .config import TrajectoryConfig
from .record import default_path, load_run_model, prepare_data, record_trajectories
from .results import find_studies
from .shipped import shipped_studies, shipped_study
from .trajectory import Trajectory
from .widgets import TargetView

INSTALL_FIX = 'Fix: pip install -e ".[notebooks]" (Voilà)'


def saved_view(
    dataset: str = "cifar10",
    *,
    poison_class: str | int = 1,
    results_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    device: str | torch.device = "cpu",
    tau_batches: int = 2,
    show_progress: bool = True,
) -> tuple[TargetView, Path, Any]:
    """The explorer's view of `dataset`: the saved clean experiment with the most checkpoints (with none saved, the
    quick runs are recorded first, a minute or two on a CPU), its run-0 model for δ and τ when it was kept, and every
    saved or shipped study of that dataset. Returns ``(view, trajectory path, data bundle)``."""
    found = [(p, t) for p, t in saved_trajectories(results_dir) if t.config.dataset == dataset and t.completed > 0]
    if not found:
        config = TrajectoryConfig.quick(dataset)
        record_trajectories(
            config,
            data_dir=data_dir,
            download=download,
            device=device,
            show_progress=show_progress,
            results_dir=results_dir,
            keep_models=True,
        )
        path = default_path(config, results_dir)
        found = [(path, Trajectory.load(path))]
    path, traj = max(found, key=lambda pt: pt[1].completed * pt[1].num_epochs)
    data = prepare_data(traj.config, data_dir=data_dir, download=download)
    try:
        model = load_run_model(path, run=0).to(device)
    except ResultsFileError:
        model = None  # recorded without saved models: no δ and τ
    studies = find_studies(results_dir) + [shipped_study(info["name"]) for info in shipped_studies()]
    split = data.test if traj.config.eval_split == "test" else data.train
    view = TargetView(
        traj.finished(),
        split.images[traj.indices],
        data.classes,
        model=model,
        train_set=data.train,
        poison_class=data.class_index(poison_class),
        studies=[s for s in studies if s.config.trajectory.dataset == dataset],
        device=device,
        tau_batches=tau_batches,
    )
    return view, path, data


APP_CELLS = [
    "import poisondiff_lite as pdl\nfrom poisondiff_lite import explore, plotting, widgets\n\npdl.short_errors()\n"
    "plotting.set_style()",
    "view, path, data = explore.saved_view({dataset!r}, poison_class={poison_class!r}, results_dir={results_dir!r}, "
    "data_dir={data_dir!r}, download={download!r}, show_progress=False)\n"
    "widgets.explorer(view, label=data.class_index({target_class!r}));",
]
TITLE = (
    "# poisondiff-lite: the target explorer\n\n"
    "Pick a class and a target by its EPA rank (0: the easiest to poison). The figure shows the image, its true-class "
    "probability over the epochs of every clean run, δ toward every class (and τ toward the poison class), and what "
    "the saved studies' attacks did to it."
)


def app_notebook(**settings: Any) -> dict:
    """The notebook Voilà serves: a title, then the explorer of `saved_view` (code cells stay hidden in Voilà)."""
    cells = [{"cell_type": "markdown", "id": "title", "metadata": {}, "source": TITLE}]
    for i, template in enumerate(APP_CELLS):
        cells.append(
            {
                "cell_type": "code",
                "id": f"app-{i}",
                "metadata": {},
                "execution_count": None,
                "outputs": [],
                "source": template.format(**settings),
            }
        )
    kernel = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return {"cells": cells, "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 5}


def serve(
    *,
    dataset: str = "cifar10",
    target_class: str = "airplane",
    poison_class: str = "automobile",
    results_dir: str | None = None,
    data_dir: str | None = None,
    download: bool = False,
    port: int = 8866,
    open_browser: bool = True,
) -> int:
    """Serve the explorer with Voilà on localhost:`port` until interrupted; returns Voilà's exit status."""
    try:
        import voila  # noqa: F401
    except ImportError:
        raise PoisonDiffError(f"Voilà is not installed. {INSTALL_FIX}") from None
    folder = Path(tempfile.mkdtemp(prefix="poisondiff-explore-"))
    settings = dict(
        dataset=dataset,
        target_class=target_class,
        poison_class=poison_class,
        results_dir=str(Path(results_dir).resolve()) if results_dir else None,
        data_dir=str(Path(data_dir).resolve()) if data_dir else None,
        download=download,
    )
    app = folder / "explorer.ipynb"
    app.write_text(json.dumps(app_notebook(**settings), indent=1))
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel draws inline
    args = [sys.executable, "-m", "voila", str(app), f"--port={port}", "--Voila.ip=127.0.0.1"]
    args += [] if open_browser else ["--no-browser"]
    print(f"the explorer: http://127.0.0.1:{port}/ (Ctrl-C stops it)", flush=True)
    return subprocess.run(args, env=env, cwd=folder).returncode
