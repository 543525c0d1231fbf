"""Datasets as uint8 tensors that can sit on the GPU whole.

CIFAR-10 comes in the official python (pickle) format, downloaded by torchvision on a machine with internet; the
offline subset shipped beside the project (same format, other md5s) loads the same way. TinyImageNet comes in the
standard ``tiny-imagenet-200`` layout (a folder, or the zip next to it). Where data lives is decided by
`resolve_data_dir`: the argument, then ``POISONDIFF_DATA``, then ``data/`` in the project.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import DatasetCorruptError, DatasetNotFoundError, InvalidChoiceError, check_choice, check_classes
from .utils import atomic_write, check_flag, progress, project_root

DATA_ENV = "POISONDIFF_DATA"
CACHE_ENV = "POISONDIFF_CACHE"
DATASETS = ("cifar10", "tinyimagenet")

# -----------------------------------------------------------------------------------------------------------------
#  checksums: the official CIFAR-10 batches and the offline subset (first 1,000 images of each batch)
# -----------------------------------------------------------------------------------------------------------------
CIFAR10_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
CIFAR10_MD5 = {
    "official": {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
    },
    "subset": {
        "data_batch_1": "74b4cdfc7ae83bc6366368b9e9d31073",
        "data_batch_2": "706ddfa9287529a12a3640000f73291c",
        "data_batch_3": "7e4d892b9c54559e8deebddf4dd7ce67",
        "data_batch_4": "89a50a035c36ab1d58175f2b995c2830",
        "data_batch_5": "b7ea041c08545dff5007c46f9045d328",
        "test_batch": "d7a698a2ad5e5ac16c4713aab63f7038",
    },
}
CIFAR10_META_MD5 = "5ff9c542aee3614f3951f8cda6e48888"
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_ZIP_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINY_FOLDERS = ("tiny-imagenet-200", "tiny-imagenet-200-subset")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_images(images: object, what: str = "images", *, batch: bool = True) -> torch.Tensor:
    """Refuse inputs that would give silently wrong numbers: a non-tensor, integer pixels other than uint8, NaN or
    inf, floats outside [0, 1] (pixels in 0-255 given as floats), and the wrong number of dimensions.

    Images are uint8 ``(3, H, W)`` (one, ``batch=False``) or ``(N, 3, H, W)``, or floats in [0, 1] of those shapes;
    plain vectors (``(D,)`` or ``(N, D)``, e.g. the 2-D toy points) pass with only the finiteness check.
    """
    if not torch.is_tensor(images):
        raise InvalidChoiceError(f"{what} must be a torch tensor, got {type(images).__name__}. Fix: "
                                 f"torch.as_tensor(x) (uint8 pixels, or floats in [0, 1])")
    x = images
    image_ndim = 4 if batch else 3
    if x.ndim not in (image_ndim, image_ndim - 2) or (x.ndim == image_ndim and x.shape[-3] != 3):
        shape = "(N, 3, H, W)" if batch else "(3, H, W)"
        hint = "" if batch else "; for several targets use distance_matrix / a batch function"
        raise InvalidChoiceError(f"{what} must have shape {shape}, got {tuple(x.shape)}{hint}")
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise InvalidChoiceError(f"{what}: dtype {x.dtype}; pass uint8 pixels (0-255) or floats in [0, 1]. Fix: "
                                 f"x.to(torch.uint8) for 0-255 integers")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise InvalidChoiceError(f"{what}: NaN or inf pixels; every pixel must be a finite number")
    if x.ndim == image_ndim and x.numel():
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-4 or hi > 1 + 1e-4:
            raise InvalidChoiceError(f"{what}: floats in [{lo:g}, {hi:g}], but they must lie in [0, 1]. Fix: divide "
                                     f"0-255 pixels by 255 (or pass them as uint8)")
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
            raise InvalidChoiceError(f"images must be uint8 of shape (N, 3, H, W), got {self.images.dtype} "
                                     f"{tuple(self.images.shape)}. Fix: (x * 255).round().to(torch.uint8) for floats "
                                     f"in [0, 1]; x.permute(0, 3, 1, 2) for (N, H, W, 3)")
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
        return DataBundle(self.name, self.train.to(device), self.test.to(device), self.classes, self.mean, self.std,
                          self.source, dict(self.notes))

    def class_index(self, name_or_index: str | int) -> int:
        """Class index from a name (``"airplane"``, a wnid or its words) or an index; unknown names list the valid ones."""
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
        return DataBundle(self.name, pick(self.train), pick(self.test), tuple(self.classes[c] for c in classes),
                          self.mean, self.std, self.source, notes)

    @classmethod
    def from_tensors(cls, name: str, train_images: torch.Tensor, train_labels: torch.Tensor,
                     test_images: torch.Tensor, test_labels: torch.Tensor,
                     classes: tuple[str, ...] | list[str] | None = None) -> DataBundle:
        """Your own data as tensor pairs: uint8 images ``(N, 3, H, W)`` and integer labels; the normalisation the
        models apply is computed from the training images."""
        train, test = ImageDataset(train_images, train_labels), ImageDataset(test_images, test_labels)
        num_classes = int(max(train.labels.max(), test.labels.max())) + 1
        classes = tuple(str(c) for c in classes) if classes is not None else tuple(str(c) for c in range(num_classes))
        if len(classes) < num_classes:
            raise InvalidChoiceError(f"labels go up to {num_classes - 1} but only {len(classes)} class names were given")
        pixels = train.images.float().div(255)
        mean = tuple(float(v) for v in pixels.mean(dim=(0, 2, 3)))
        std = tuple(max(float(v), 1e-3) for v in pixels.std(dim=(0, 2, 3)))
        return cls(name, train, test, classes, mean, std, source="tensors")

    def __repr__(self) -> str:
        return (f"DataBundle({self.name!r}: train {tuple(self.train.images.shape)}, test {tuple(self.test.images.shape)}, "
                f"{self.num_classes} classes, on {self.train.device}, from {self.source})")


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
    """Where decoded datasets are cached: the argument, then ``$POISONDIFF_CACHE``, then ``~/.cache/poisondiff_lite``."""
    if cache_dir is not None:
        path = Path(cache_dir)
    elif os.environ.get(CACHE_ENV):
        path = Path(os.environ[CACHE_ENV])
    else:
        path = Path.home() / ".cache" / "poisondiff_lite"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _missing(what: str, root: Path, looked: list[Path], fix: str) -> DatasetNotFoundError:
    places = ", ".join(str(p) for p in looked)
    return DatasetNotFoundError(
        f"{what} not found under {root} (looked for {places}). Fix: {fix}, or point the loader at a folder that has it "
        f"with root=... or the {DATA_ENV} environment variable."
    )


# -----------------------------------------------------------------------------------------------------------------
#  CIFAR-10
# -----------------------------------------------------------------------------------------------------------------
def _find_cifar10(root: Path) -> Path | None:
    for candidate in (root / "cifar-10-batches-py", root / "cifar10-subset" / "cifar-10-batches-py", root):
        if (candidate / "test_batch").exists() and (candidate / "batches.meta").exists():
            return candidate
    return None


def _download_cifar10(root: Path) -> None:
    from torchvision.datasets import CIFAR10

    try:
        root.mkdir(parents=True, exist_ok=True)
        CIFAR10(str(root), train=True, download=True)
    except Exception as exc:  # no internet, no disk space, a proxy: all say the same to the user
        raise DatasetNotFoundError(
            f"CIFAR-10 is not under {root} and downloading it failed ({type(exc).__name__}: {exc}). Fix: run once on a "
            f"machine with internet (load_dataset('cifar10', download=True)), or copy the cifar-10-batches-py folder "
            f"into {root}, or set {DATA_ENV} to a folder that has it."
        ) from exc


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as handle:
            entry = pickle.load(handle, encoding="latin1")
        data = np.asarray(entry["data"], dtype=np.uint8)
        labels = np.asarray(entry["labels"] if "labels" in entry else entry["fine_labels"], dtype=np.int64)
    except Exception as exc:
        raise DatasetCorruptError(
            f"cannot read CIFAR-10 batch {path} ({type(exc).__name__}: {exc}). Fix: delete {path.parent} and download "
            f"again with load_dataset('cifar10', download=True)."
        ) from exc
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DatasetCorruptError(f"CIFAR-10 batch {path} has data {data.shape} and {len(labels)} labels; "
                                  f"expected (N, 3072) and N labels. Fix: delete {path.parent} and download again.")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(root: str | os.PathLike | None = None, *, download: bool = False, verify: bool = True) -> DataBundle:
    """Load CIFAR-10 (the full dataset, or the offline subset) as uint8 tensors on the CPU.

    Parameters
    ----------
    root : folder holding ``cifar-10-batches-py`` (or ``cifar10-subset/cifar-10-batches-py``); see `resolve_data_dir`.
    download : download with torchvision when the files are missing.
    verify : check every batch's md5 against the official files and the offline subset.
    """
    root = resolve_data_dir(root)
    folder = _find_cifar10(root)
    if folder is None and download:
        _download_cifar10(root)
        folder = _find_cifar10(root)
    if folder is None:
        raise _missing("CIFAR-10", root, [root / "cifar-10-batches-py", root / "cifar10-subset"],
                       "download it with load_dataset('cifar10', download=True) (DOWNLOAD = True in the notebooks)")
    kinds = set()
    if verify:
        for name in CIFAR10_BATCHES:
            path = folder / name
            if not path.exists():
                raise DatasetCorruptError(f"CIFAR-10 folder {folder} lacks {name}. Fix: delete {folder} and download again.")
            digest = _md5(path)
            kind = next((k for k, table in CIFAR10_MD5.items() if table[name] == digest), None)
            if kind is None:
                raise DatasetCorruptError(
                    f"CIFAR-10 file {path} has md5 {digest}, which matches neither the official file nor the offline "
                    f"subset: it is corrupt or truncated. Fix: delete {folder} and download again with "
                    f"load_dataset('cifar10', download=True)."
                )
            kinds.add(kind)
        if len(kinds) > 1:
            raise DatasetCorruptError(f"CIFAR-10 folder {folder} mixes official and subset batches. Fix: use one set.")
    train = [_read_cifar_batch(folder / name) for name in CIFAR10_BATCHES[:5]]
    test_x, test_y = _read_cifar_batch(folder / "test_batch")
    try:
        with open(folder / "batches.meta", "rb") as handle:
            classes = tuple(pickle.load(handle, encoding="latin1")["label_names"])
    except Exception as exc:
        raise DatasetCorruptError(f"cannot read {folder / 'batches.meta'} ({exc}). Fix: delete {folder} and download again.") from exc
    train_set = ImageDataset(torch.from_numpy(np.concatenate([x for x, _ in train])),
                             torch.from_numpy(np.concatenate([y for _, y in train])))
    test_set = ImageDataset(torch.from_numpy(test_x.copy()), torch.from_numpy(test_y))
    kind = kinds.pop() if kinds else "unverified"
    return DataBundle("cifar10", train_set, test_set, classes, CIFAR10_MEAN, CIFAR10_STD,
                      source=f"{folder} ({kind})", notes={"files": kind})


# -----------------------------------------------------------------------------------------------------------------
#  TinyImageNet
# -----------------------------------------------------------------------------------------------------------------
def _find_tiny(root: Path) -> Path | None:
    for name in TINY_FOLDERS:
        candidate = root / name
        if (candidate / "wnids.txt").exists() and (candidate / "train").is_dir():
            return candidate
    if (root / "wnids.txt").exists() and (root / "train").is_dir():
        return root
    return None


def _obtain_tiny(root: Path, download: bool) -> Path:
    folder = _find_tiny(root)
    if folder is not None:
        return folder
    archive = root / "tiny-imagenet-200.zip"
    if not archive.exists() and download:
        from torchvision.datasets.utils import download_url

        try:
            download_url(TINY_URL, str(root), md5=TINY_ZIP_MD5)
        except Exception as exc:
            raise DatasetNotFoundError(
                f"TinyImageNet is not under {root} and downloading it failed ({type(exc).__name__}: {exc}). Fix: put "
                f"the standard tiny-imagenet-200 folder or tiny-imagenet-200.zip into {root}, or set {DATA_ENV}."
            ) from exc
    if archive.exists():
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(root)
        except zipfile.BadZipFile as exc:
            raise DatasetCorruptError(f"{archive} is not a valid zip file. Fix: delete it and download again.") from exc
        folder = _find_tiny(root)
        if folder is not None:
            return folder
    raise _missing("TinyImageNet", root, [root / n for n in TINY_FOLDERS] + [archive],
                   "download it with load_dataset('tinyimagenet', download=True) or unpack tiny-imagenet-200.zip there")


def _decode(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except Exception as exc:
        raise DatasetCorruptError(f"cannot decode image {path} ({exc}). Fix: restore that file from the original "
                                  f"tiny-imagenet-200.zip, or delete the folder and download again.") from exc
    if array.shape != (64, 64, 3):
        raise DatasetCorruptError(f"image {path} has shape {array.shape}, expected (64, 64, 3).")
    return array.transpose(2, 0, 1)


def _read_tiny(folder: Path, show_progress: bool) -> dict[str, np.ndarray]:
    wnids = [w.strip() for w in (folder / "wnids.txt").read_text().split() if w.strip()]
    wnids = sorted(wnids)  # ImageFolder order: class 0 is n01443537 (goldfish), as the authors use
    index = {w: i for i, w in enumerate(wnids)}
    train_files, train_labels = [], []
    for wnid in wnids:
        image_dir = folder / "train" / wnid / "images"
        if not image_dir.is_dir():
            raise DatasetCorruptError(f"{image_dir} is missing although {wnid} is in wnids.txt. Fix: re-extract the dataset.")
        files = sorted(image_dir.glob("*.JPEG"))
        train_files += files
        train_labels += [index[wnid]] * len(files)
    annotations = folder / "val" / "val_annotations.txt"
    if not annotations.exists():
        raise DatasetCorruptError(f"{annotations} is missing. Fix: re-extract the dataset (val/ comes with the zip).")
    val_files, val_labels = [], []
    for line in annotations.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            raise DatasetCorruptError(f"{annotations}: unreadable line {line[:80]!r}. Fix: re-extract the dataset.")
        val_files.append(folder / "val" / "images" / parts[0])
        val_labels.append(index[parts[1]])
    images = {}
    for split, files in (("train", train_files), ("val", val_files)):
        out = np.empty((len(files), 3, 64, 64), dtype=np.uint8)
        for i, path in enumerate(progress(files, enable=show_progress, desc=f"decoding TinyImageNet {split}")):
            out[i] = _decode(path)
        images[split] = out
    words = {}
    words_file = folder / "words.txt"
    if words_file.exists():
        for line in words_file.read_text().splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid] = text
    return {
        "train_x": images["train"], "train_y": np.asarray(train_labels, dtype=np.int64),
        "val_x": images["val"], "val_y": np.asarray(val_labels, dtype=np.int64),
        "wnids": np.asarray(wnids), "names": np.asarray([words.get(w, w) for w in wnids]),
    }


def load_tinyimagenet(root: str | os.PathLike | None = None, *, download: bool = False,
                      cache_dir: str | os.PathLike | None = None, progress_bar: bool = True) -> DataBundle:
    """Load TinyImageNet (``tiny-imagenet-200`` layout; the val split serves as test) as uint8 tensors.

    The JPEGs are decoded once and cached as one ``.npy`` bundle in `cache_dir` (see `resolve_cache_dir`).
    """
    root = resolve_data_dir(root)
    folder = _obtain_tiny(root, download)
    counts = sum(1 for _ in (folder / "train").glob("*/images/*.JPEG"))
    key = hashlib.sha256(f"{folder.resolve()}|{counts}|{(folder / 'val' / 'val_annotations.txt').stat().st_size}".encode())
    cache = resolve_cache_dir(cache_dir) / f"tinyimagenet-{key.hexdigest()[:16]}.npz"
    arrays = None
    if cache.exists():
        try:
            with np.load(cache, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except Exception:
            arrays = None  # a broken cache is rebuilt, never trusted
    if arrays is None:
        arrays = _read_tiny(folder, progress_bar)
        atomic_write(cache, lambda f: np.savez(f, **arrays))
    train = ImageDataset(torch.from_numpy(arrays["train_x"]), torch.from_numpy(arrays["train_y"]))
    test = ImageDataset(torch.from_numpy(arrays["val_x"]), torch.from_numpy(arrays["val_y"]))
    names = tuple(str(n) for n in arrays["names"])
    return DataBundle("tinyimagenet", train, test, names, IMAGENET_MEAN, IMAGENET_STD, source=str(folder),
                      notes={"wnids": tuple(str(w) for w in arrays["wnids"])})


CUSTOM_DATASETS: dict[str, Callable[..., DataBundle]] = {}


def register_dataset(name: str, source: DataBundle | Callable[..., DataBundle]) -> None:
    """Make your own data set usable by name everywhere (configs, recorder, studies, CLI in the same process).

    `source` is a `DataBundle` (e.g. from `DataBundle.from_tensors`) or a loader ``f(root, download=False) ->
    DataBundle``.
    """
    if str(name) in DATASETS:
        raise InvalidChoiceError(f"{name!r} is a built-in data set; register yours under another name")
    CUSTOM_DATASETS[str(name)] = (lambda root=None, download=False, **kw: source) if isinstance(source, DataBundle) \
        else source


def dataset_names() -> tuple[str, ...]:
    """The built-in data sets and any registered with `register_dataset`."""
    return DATASETS + tuple(CUSTOM_DATASETS)


def load_dataset(name: str, root: str | os.PathLike | None = None, *, download: bool = False,
                 device: torch.device | str | None = None, **kwargs) -> DataBundle:
    """Load ``"cifar10"``, ``"tinyimagenet"`` or a registered data set; optionally move it to `device` whole."""
    download = check_flag("download", download)
    if str(name) in CUSTOM_DATASETS:
        bundle = CUSTOM_DATASETS[str(name)](root, download=download, **kwargs)
        return bundle.to(device) if device is not None else bundle
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        check_choice("dataset", name, dataset_names())
    loader = load_cifar10 if key == "cifar10" else load_tinyimagenet
    bundle = loader(root, download=download, **kwargs)
    return bundle.to(device) if device is not None else bundle
