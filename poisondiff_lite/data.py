"""Datasets as uint8 tensors that can sit on the GPU whole.

The containers (`ImageDataset`, `DataBundle`), input checks and where data lives; the readers of the two built-in
data sets are in `loaders`, and `datasets` loads any data set by name (built-in or registered). CIFAR-10 comes in the
official python (pickle) format, downloaded by torchvision on a machine with internet; the offline subset shipped
beside the project (same format, other md5s) loads the same way. TinyImageNet comes in the standard
``tiny-imagenet-200`` layout (a folder, or the zip next to it). Where data lives is decided by `resolve_data_dir`:
the argument, then ``POISONDIFF_DATA``, then ``data/`` in the project.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import InvalidChoiceError, check_choice, check_classes
from .utils import project_root

DATA_ENV = "POISONDIFF_DATA"
CACHE_ENV = "POISONDIFF_CACHE"
DATASETS = ("cifar10", "tinyimagenet")


def check_images(images: object, what: str = "images", *, batch: bool = True) -> torch.Tensor:
    """Refuse inputs that would give silently wrong numbers: a non-tensor, integer pixels other than uint8, NaN or
    inf, floats outside [0, 1] (pixels in 0-255 given as floats), and the wrong number of dimensions.

    Images are uint8 ``(3, H, W)`` (one, ``batch=False``) or ``(N, 3, H, W)``, or floats in [0, 1] of those shapes;
    plain vectors (``(D,)`` or ``(N, D)``, e.g. the 2-D toy points) pass with only the finiteness check.
    """
    if not torch.is_tensor(images):
        raise InvalidChoiceError(
            f"{what} must be a torch tensor, got {type(images).__name__}. Fix: "
            f"torch.as_tensor(x) (uint8 pixels, or floats in [0, 1])"
        )
    x = images
    image_ndim = 4 if batch else 3
    if x.ndim not in (image_ndim, image_ndim - 2) or (x.ndim == image_ndim and x.shape[-3] != 3):
        shape = "(N, 3, H, W)" if batch else "(3, H, W)"
        hint = "" if batch else "; for several targets use distance_matrix / a batch function"
        raise InvalidChoiceError(f"{what} must have shape {shape}, got {tuple(x.shape)}{hint}")
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise InvalidChoiceError(
            f"{what}: dtype {x.dtype}; pass uint8 pixels (0-255) or floats in [0, 1]. Fix: "
            f"x.to(torch.uint8) for 0-255 integers"
        )
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise InvalidChoiceError(f"{what}: NaN or inf pixels; every pixel must be a finite number")
    if x.ndim == image_ndim and x.numel():
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-4 or hi > 1 + 1e-4:
            raise InvalidChoiceError(
                f"{what}: floats in [{lo:g}, {hi:g}], but they must lie in [0, 1]. Fix: divide "
                f"0-255 pixels by 255 (or pass them as uint8)"
            )
    return x


def to_unit(images: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """Images as float on `device`: uint8 is divided by 255 into [0, 1], anything else is taken as already in model
    units (the 2-D toy points, perturbed images)."""
    x = images if device is None else images.to(device)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


# -----------------------------------------------------------------------------------------------------------------
#  containers
# -----------------------------------------------------------------------------------------------------------------
@dataclass
class ImageDataset:
    """Images as a uint8 tensor ``(N, 3, H, W)`` and integer labels ``(N,)``, on any device."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if not torch.is_tensor(self.images) or not torch.is_tensor(self.labels):
            raise InvalidChoiceError("images and labels must be torch tensors. Fix: torch.as_tensor(array)")
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise InvalidChoiceError(
                f"images must be uint8 of shape (N, 3, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}. Fix: (x * 255).round().to(torch.uint8) for floats "
                f"in [0, 1]; x.permute(0, 3, 1, 2) for (N, H, W, 3)"
            )
        if self.labels.ndim != 1 or len(self.labels) != len(self.images):
            raise InvalidChoiceError(f"labels must have shape ({len(self.images)},), got {tuple(self.labels.shape)}")
        if self.labels.is_floating_point() or self.labels.dtype == torch.bool:
            raise InvalidChoiceError(f"labels must be integers, got {self.labels.dtype}")
        if len(self.labels) and int(self.labels.min()) < 0:
            raise InvalidChoiceError(f"labels must be >= 0, got {int(self.labels.min())}")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> ImageDataset:
        """Copy to `device` (a no-op when already there)."""
        return ImageDataset(self.images.to(device), self.labels.to(device))

    def subset(self, indices: torch.Tensor | np.ndarray | list[int]) -> ImageDataset:
        """The examples at `indices`, in that order."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long, device=self.images.device)
        return ImageDataset(self.images[idx], self.labels[idx])

    def float_images(self, indices: torch.Tensor | None = None) -> torch.Tensor:
        """Images as float32 in [0, 1] (all, or those at `indices`)."""
        images = self.images if indices is None else self.images[indices]
        return images.float().div_(255.0)


@dataclass
class DataBundle:
    """A dataset's train and test splits plus what models need to know about it."""

    name: str
    train: ImageDataset
    test: ImageDataset
    classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str = ""
    notes: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])

    def to(self, device: torch.device | str) -> DataBundle:
        """Move both splits to `device` (CIFAR-10 is 150 MB as uint8: it fits on any GPU)."""
        return DataBundle(
            self.name,
            self.train.to(device),
            self.test.to(device),
            self.classes,
            self.mean,
            self.std,
            self.source,
            dict(self.notes),
        )

    def class_index(self, name_or_index: str | int) -> int:
        """Class index from a name (``"airplane"``, a wnid or its words) or an index; unknown names list the valid
        ones."""
        if isinstance(name_or_index, (int, np.integer)):
            check_choice("class index", int(name_or_index), range(self.num_classes))
            return int(name_or_index)
        wanted = str(name_or_index).strip().lower()
        for i, cls in enumerate(self.classes):
            names = [part.strip().lower() for part in cls.replace(";", ",").split(",")]
            if wanted == cls.lower() or wanted in names:
                return i
        for i, wnid in enumerate(self.notes.get("wnids", ())):
            if wanted == wnid.lower():
                return i
        shown = list(self.classes[:20]) + (["..."] if self.num_classes > 20 else [])
        check_choice("class name", name_or_index, shown)
        raise AssertionError  # unreachable: check_choice raised

    def select_classes(self, classes: list[int] | range) -> DataBundle:
        """Keep only `classes` (relabelled 0..k-1 in the given order): a small TinyImageNet for quick runs."""
        classes = list(check_classes("classes", classes, self.num_classes))
        remap = torch.full((self.num_classes,), -1, dtype=torch.long)
        remap[torch.tensor(classes)] = torch.arange(len(classes))

        def pick(split: ImageDataset) -> ImageDataset:
            new = remap.to(split.labels.device)[split.labels]
            keep = torch.nonzero(new >= 0).squeeze(1)
            return ImageDataset(split.images[keep], new[keep])

        notes = dict(self.notes, kept_classes=classes)
        if "wnids" in notes:  # class_index looks names up by wnid: keep them aligned with the new labels
            notes["wnids"] = tuple(notes["wnids"][c] for c in classes)
        return DataBundle(
            self.name,
            pick(self.train),
            pick(self.test),
            tuple(self.classes[c] for c in classes),
            self.mean,
            self.std,
            self.source,
            notes,
        )

    @classmethod
    def from_tensors(
        cls,
        name: str,
        train_images: torch.Tensor,
        train_labels: torch.Tensor,
        test_images: torch.Tensor,
        test_labels: torch.Tensor,
        classes: tuple[str, ...] | list[str] | None = None,
    ) -> DataBundle:
        """Your own data as tensor pairs: uint8 images ``(N, 3, H, W)`` and integer labels; the normalisation the
        models apply is computed from the training images."""
        train, test = ImageDataset(train_images, train_labels), ImageDataset(test_images, test_labels)
        num_classes = int(max(train.labels.max(), test.labels.max())) + 1
        classes = tuple(str(c) for c in classes) if classes is not None else tuple(str(c) for c in range(num_classes))
        if len(classes) < num_classes:
            raise InvalidChoiceError(
                f"labels go up to {num_classes - 1} but only {len(classes)} class names were given"
            )
        pixels = train.images.float().div(255)
        mean = tuple(float(v) for v in pixels.mean(dim=(0, 2, 3)))
        std = tuple(max(float(v), 1e-3) for v in pixels.std(dim=(0, 2, 3)))
        return cls(name, train, test, classes, mean, std, source="tensors")

    def __repr__(self) -> str:
        return (
            f"DataBundle({self.name!r}: train {tuple(self.train.images.shape)}, "
            f"test {tuple(self.test.images.shape)}, "
            f"{self.num_classes} classes, on {self.train.device}, from {self.source})"
        )


# -----------------------------------------------------------------------------------------------------------------
#  where data lives
# -----------------------------------------------------------------------------------------------------------------
def resolve_data_dir(root: str | os.PathLike | None = None) -> Path:
    """The data folder: `root` if given, else ``$POISONDIFF_DATA``, else ``data/`` in the project."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return project_root() / "data"


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where decoded datasets are cached: the argument, ``$POISONDIFF_CACHE``, then ``~/.cache/poisondiff_lite``."""
    if cache_dir is not None:
        path = Path(cache_dir)
    elif os.environ.get(CACHE_ENV):
        path = Path(os.environ[CACHE_ENV])
    else:
        path = Path.home() / ".cache" / "poisondiff_lite"
    path.mkdir(parents=True, exist_ok=True)
    return path
