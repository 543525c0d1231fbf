"""The tutorial's numbered notebooks on disk: where they are (the checkout's ``notebooks/``, else the copy installed
with the package), and the ones a command names."""

from __future__ import annotations

from pathlib import Path

from .errors import InvalidChoiceError, PoisonDiffError
from .utils import project_root

PACKAGED = Path(__file__).resolve().parent / "tutorial"  # a wheel installs notebooks/ here (pyproject's package-dir)


def tutorial_folder() -> Path:
    """The numbered notebooks: ``notebooks/`` of the source checkout, else the copy a wheel installed with the
    package (``poisondiff_lite/tutorial``), so ``poisondiff tutorial`` works outside the repository."""
    checkout = project_root() / "notebooks"
    if any(checkout.glob("[0-9][0-9]_*.ipynb")) or not PACKAGED.exists():
        return checkout
    return PACKAGED


def is_packaged(folder: str | Path) -> bool:
    """Whether `folder` is the installed copy (read-only for a user: run its notebooks from elsewhere)."""
    return Path(folder).resolve() == PACKAGED


def numbered_notebooks(folder: str | Path | None, only: list[str] | None = None) -> list[Path]:
    """The notebooks ``NN_*.ipynb`` in `folder`, in order; with `only`, those whose name starts with one of its
    prefixes (``["00", "05"]``); `folder` None means `tutorial_folder()`. An unknown prefix or an empty folder is a
    one-line error naming the fix."""
    folder = tutorial_folder() if folder is None else folder
    notebooks = sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise PoisonDiffError(
            f"no numbered notebooks found in {folder}. Fix: run from the project folder or pass --notebooks PATH."
        )
    return by_prefix(notebooks, only, f"no such notebook in {folder}")


def by_prefix(notebooks: list[Path], only: list[str] | None, missing: str, fix: str = "") -> list[Path]:
    """The `notebooks` whose name starts with one of the prefixes in `only` (all of them without `only`); a prefix
    that matches none is a one-line error: ``--only 99: <missing>. Fix: choose among 00, 01<fix>``."""
    if not only:
        return notebooks
    unknown = [o for o in only if not any(nb.name.startswith(o) for nb in notebooks)]
    if unknown:
        choices = ", ".join(nb.name[:2] for nb in notebooks)
        raise InvalidChoiceError(f"--only {' '.join(unknown)}: {missing}. Fix: choose among {choices}{fix}")
    return [nb for nb in notebooks if any(nb.name.startswith(o) for o in only)]
