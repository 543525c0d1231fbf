"""The tutorial's numbered notebooks on disk: find them and pick the ones a command names."""

from __future__ import annotations

from pathlib import Path

from .errors import InvalidChoiceError, PoisonDiffError


def numbered_notebooks(folder: str | Path, only: list[str] | None = None) -> list[Path]:
    """The notebooks ``NN_*.ipynb`` in `folder`, in order; with `only`, those whose name starts with one of its
    prefixes (``["00", "05"]``). An unknown prefix or an empty folder is a one-line error naming the fix."""
    notebooks = sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise PoisonDiffError(
            f"no numbered notebooks found in {folder}. Fix: run from the project folder or pass --notebooks PATH."
        )
    if only:
        unknown = [o for o in only if not any(nb.name.startswith(o) for nb in notebooks)]
        if unknown:
            raise InvalidChoiceError(
                f"--only {' '.join(unknown)}: no such notebook in {folder}. Fix: choose among "
                f"{', '.join(nb.name[:2] for nb in notebooks)}"
            )
        notebooks = [nb for nb in notebooks if any(nb.name.startswith(o) for o in only)]
    return notebooks
