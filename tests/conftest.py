"""Shared fixtures. Points the loaders at the offline dataset subsets and keeps every run CPU-sized and quiet."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "datasets"


def pytest_configure(config: pytest.Config) -> None:
    # set before any notebook kernel starts: kernels inherit this environment
    if not os.environ.get("POISONDIFF_DATA") and SHARED_DATA.exists():
        os.environ["POISONDIFF_DATA"] = str(SHARED_DATA)
    os.environ.setdefault("POISONDIFF_QUICK", "1")
    os.environ.setdefault("POISONDIFF_RESULTS", tempfile.mkdtemp(prefix="poisondiff-results-"))
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("MPLBACKEND", "agg")
    _audit_notebook_kernels(config)


AUDIT_LOG = "POISONDIFF_AUDIT_LOG"


def _audit_notebook_kernels(config: pytest.Config) -> None:
    """Every notebook kernel logs the files it opens under the results folder and the EPA it holds (an IPython
    startup file, tests/kernel_audit.py); this process marks where each cell starts. Read by
    test_tutorial_consistency.py after the notebooks ran."""
    if AUDIT_LOG in os.environ:
        return
    ipython_dir = Path(tempfile.mkdtemp(prefix="poisondiff-ipython-"))
    startup = ipython_dir / "profile_default" / "startup"
    startup.mkdir(parents=True)
    shutil.copy(Path(__file__).with_name("kernel_audit.py"), startup / "00-poisondiff-audit.py")
    os.environ["IPYTHONDIR"] = str(ipython_dir)
    os.environ[AUDIT_LOG] = str(ipython_dir / "audit.jsonl")
    config.pluginmanager.register(_CellMarks(Path(os.environ[AUDIT_LOG])), "poisondiff-cell-marks")


class _CellMarks:
    """Writes ``{"cell": {notebook, index, exercise}}`` before each notebook cell and ``{"cell": null}`` before any
    other test (a kernel a test starts logs too)."""

    def __init__(self, log: Path) -> None:
        self.log = log

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        cell = getattr(item, "cell", None)
        mark = None
        if cell is not None and hasattr(item.parent, "nb"):
            cells = item.parent.nb.cells
            position = next(i for i, c in enumerate(cells) if c is cell)
            exercises = next(
                (i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith("## Exercises")),
                len(cells),
            )
            mark = {"notebook": Path(str(item.parent.fspath)).name, "index": position, "exercise": position > exercises}
        with open(self.log, "a") as f:
            f.write(json.dumps({"cell": mark}) + "\n")


def raises_one_line(call, *words: str, error: type[Exception] | None = None) -> str:
    """Call `call`, expect `error` (default: the package's InvalidChoiceError) with a one-line message holding every
    one of `words`, and return the message."""
    from poisondiff_lite import InvalidChoiceError

    with pytest.raises(error or InvalidChoiceError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message
    return message


def _data_root() -> Path:
    root = Path(os.environ.get("POISONDIFF_DATA", SHARED_DATA))
    if not (root / "cifar10-subset").exists() and not (root / "cifar-10-batches-py").exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide the dataset subsets; none under {root}")
        pytest.skip(f"no datasets under {root}; set POISONDIFF_DATA")
    return root


@pytest.fixture(scope="session")
def data_root() -> Path:
    return _data_root()


@pytest.fixture(scope="session")
def cifar(data_root):
    from poisondiff_lite import load_dataset

    return load_dataset("cifar10", data_root)


@pytest.fixture(scope="session")
def tiny(data_root):
    from poisondiff_lite import load_dataset

    return load_dataset("tinyimagenet", data_root, progress_bar=False)


@pytest.fixture()
def toy_bundle():
    return make_toy_bundle()


def make_toy_bundle(train: int = 64, test: int = 32):
    """A learnable 4-class problem of 16x16 images: class k has a bright square in quadrant k.

    Not flip-invariant (a horizontal flip swaps classes 0 and 1, 2 and 3): train with ``flip=False`` where a test
    needs the model to learn it.
    """
    import torch

    from poisondiff_lite.data import DataBundle, ImageDataset

    gen = torch.Generator().manual_seed(0)

    def make(n: int) -> ImageDataset:
        labels = torch.arange(n) % 4
        images = torch.randint(0, 60, (n, 3, 16, 16), generator=gen, dtype=torch.uint8)
        for k in range(4):
            r, c = divmod(k, 2)
            images[labels == k, :, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8] += 150
        return ImageDataset(images, labels)

    return DataBundle("cifar10", make(train), make(test), ("a", "b", "c", "d"), (0.5,) * 3, (0.25,) * 3, source="toy")


def pytest_collection_modifyitems(items: list) -> None:
    # nbval waits only 5 s for each output message after a cell finishes; a long cell on a loaded 2-core machine
    # can deliver its figure later than that, which fails the cell although it ran fine
    for item in items:
        if hasattr(item, "output_timeout"):
            item.output_timeout = 60
    # the checks on what the notebooks did run after the notebooks
    items.sort(key=lambda item: item.get_closest_marker("after_notebooks") is not None)
