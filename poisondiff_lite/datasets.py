"""Data sets by name: the registry of your own (`register_dataset`), the names a config may use (`dataset_names`),
and `load_dataset`, which dispatches to a registered loader or to the built-in readers of `loaders`.

It sits above both `data` (the containers) and `loaders` (the readers), so neither imports the other's user.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from .data import DATASETS, DataBundle
from .errors import InvalidChoiceError, check_choice
from .loaders import load_cifar10, load_tinyimagenet
from .plugins import load_plugins
from .utils import check_flag

CUSTOM_DATASETS: dict[str, Callable[..., DataBundle]] = {}


def register_dataset(name: str, source: DataBundle | Callable[..., DataBundle]) -> None:
    """Make your own data set usable by name everywhere (configs, recorder, studies, CLI in the same process).

    `source` is a `DataBundle` (e.g. from `DataBundle.from_tensors`) or a loader ``f(root, download=False) ->
    DataBundle``.
    """
    if str(name) in DATASETS:
        raise InvalidChoiceError(f"{name!r} is a built-in data set; register yours under another name")
    CUSTOM_DATASETS[str(name)] = (
        (lambda root=None, download=False, **kw: source) if isinstance(source, DataBundle) else source
    )


def dataset_names() -> tuple[str, ...]:
    """The built-in data sets and any registered with `register_dataset`."""
    load_plugins()  # the modules named in $POISONDIFF_PLUGINS register theirs
    return DATASETS + tuple(CUSTOM_DATASETS)


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    device: torch.device | str | None = None,
    **kwargs,
) -> DataBundle:
    """Load ``"cifar10"``, ``"tinyimagenet"`` or a registered data set; optionally move it to `device` whole."""
    download = check_flag("download", download)
    load_plugins()  # a data set may be registered by a $POISONDIFF_PLUGINS module
    if str(name) in CUSTOM_DATASETS:
        bundle = CUSTOM_DATASETS[str(name)](root, download=download, **kwargs)
        return bundle.to(device) if device is not None else bundle
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        check_choice("dataset", name, dataset_names())
    loader = load_cifar10 if key == "cifar10" else load_tinyimagenet
    bundle = loader(root, download=download, **kwargs)
    return bundle.to(device) if device is not None else bundle
