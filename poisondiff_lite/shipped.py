"""Studies shipped with the package: finished attack-validation runs that a pip-installed user can load and plot.

Each one lives in ``poisondiff_lite/shipped/<name>/`` as the files `run_study` writes (``study.json``,
``targets.json``, ``results.jsonl``, without the crafted poisons) plus ``provenance.json``: the command that
reproduces it, the code version, the date, the machine and the wall time. `shipped_study` returns the same
`StudyResults` that `run_study` returns, so every table and plot works on it unchanged.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path
from collections.abc import Callable
from typing import Any

from .errors import InvalidChoiceError, ResultsFileError
from .results import StudyResults, read_study
from .study_config import StudyConfig
from .utils import atomic_write_json
from .version import __version__

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
STUDY_FILES = ("study.json", "targets.json", "results.jsonl")

# name -> (the preset that makes it, the command that reproduces it); a test checks each shipped study against
# its preset
LAB_STUDIES: dict[str, tuple[Callable[[], StudyConfig], str]] = {
    "cifar10-lab-scratch": (
        lambda: StudyConfig.lab("cifar10", "scratch"),
        "poisondiff study --lab --dataset cifar10 --no-progress",
    ),
    "cifar10-lab-transfer": (
        lambda: StudyConfig.lab("cifar10", "transfer"),
        "poisondiff study --lab --transfer --dataset cifar10 --no-progress",
    ),
    "tinyimagenet-lab-scratch": (
        lambda: StudyConfig.lab("tinyimagenet", "scratch"),
        "poisondiff study --lab --dataset tinyimagenet --no-progress",
    ),
}


def shipped_studies() -> list[dict[str, Any]]:
    """Name, description and provenance of every shipped study, sorted by name."""
    out = []
    for folder in sorted(SHIPPED_DIR.glob("*/provenance.json")):
        provenance = json.loads(folder.read_text())
        out.append({"name": folder.parent.name, **provenance})
    return out


def shipped_path(name: str) -> Path:
    """The folder of the shipped study `name` (an unknown name is an error that lists the known ones)."""
    names = [s["name"] for s in shipped_studies()]
    if name not in names:
        raise InvalidChoiceError(f"no shipped study {name!r}; choose from {', '.join(names) or '(none shipped)'}")
    return SHIPPED_DIR / name


def shipped_study(name: str) -> StudyResults:
    """The shipped study `name` as `StudyResults` (the object `run_study` returns), read from the package."""
    folder = shipped_path(name)
    missing = [f for f in STUDY_FILES if not (folder / f).exists()]
    if missing:
        raise ResultsFileError(
            f"the shipped study {name!r} lacks {', '.join(missing)}. Fix: reinstall the package "
            f"(pip install --force-reinstall poisondiff-lite)."
        )
    return read_study(folder)


def ship(
    result: StudyResults,
    name: str,
    *,
    description: str,
    command: str,
    wall_seconds: float,
    code_version: str | None = None,
    allow_partial: bool = False,
    destination: str | os.PathLike = SHIPPED_DIR,
) -> Path:
    """Copy a finished study (without its poisons) into the package's shipped studies, with its provenance.

    Parameters
    ----------
    result : what `run_study` returned (its folder holds the files).
    name : folder name under `destination`. description : one line shown by `shipped_studies`.
    command : the shell command that reproduces the study. wall_seconds : how long it took.
    code_version : the code that ran it (default: ``git describe`` of this checkout now).
    allow_partial : ship a study that is not finished yet, marked so (``complete: false`` and the targets done);
        running its command on a copy of the shipped files resumes it.
    """
    if result.path is None:
        raise InvalidChoiceError("only a study saved by run_study can be shipped (its results have no folder)")
    if not result.complete() and not allow_partial:
        raise InvalidChoiceError(f"the study in {result.path} is not complete; run it to the end before shipping it")
    folder = Path(destination) / name
    folder.mkdir(parents=True, exist_ok=True)
    for file in STUDY_FILES:
        shutil.copyfile(Path(result.path) / file, folder / file)
    import torch  # only for its version

    atomic_write_json(
        folder / "provenance.json",
        {
            "description": description,
            "command": command,
            "code_version": code_version or _code_version(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
            "wall_seconds": round(float(wall_seconds), 1),
            "study_key": result.config.key(),
            "targets": len(result.targets),
            "victim_rows": len(result.rows),
            "complete": result.complete(),
            "targets_done": result.targets_done(),
            "torch": torch.__version__,
        },
    )
    return folder


def _code_version() -> str:
    """``git describe`` of the source checkout (with ``-dirty`` for uncommitted changes), else the package version."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return f"{__version__} ({out.stdout.strip()})"
    except (OSError, subprocess.SubprocessError):
        return __version__
