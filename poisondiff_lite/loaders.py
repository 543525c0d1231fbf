"""Reading the two built-in data sets from disk: CIFAR-10 (the official python batches, downloaded by torchvision,
checked against the official md5s and those of the offline subset) and TinyImageNet (the standard
``tiny-imagenet-200`` folder or zip, decoded once into a cache). Both return a `DataBundle` of uint8 tensors."""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from .data import DATA_ENV, DataBundle, ImageDataset, resolve_cache_dir, resolve_data_dir
from .errors import DatasetCorruptError, DatasetNotFoundError
from .utils import atomic_write, progress

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
        raise DatasetCorruptError(
            f"CIFAR-10 batch {path} has data {data.shape} and {len(labels)} labels; "
            f"expected (N, 3072) and N labels. Fix: delete {path.parent} and download again."
        )
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
        raise _missing(
            "CIFAR-10",
            root,
            [root / "cifar-10-batches-py", root / "cifar10-subset"],
            "download it with load_dataset('cifar10', download=True) (DOWNLOAD = True in the notebooks)",
        )
    kinds = set()
    if verify:
        for name in CIFAR10_BATCHES:
            path = folder / name
            if not path.exists():
                raise DatasetCorruptError(
                    f"CIFAR-10 folder {folder} lacks {name}. Fix: delete {folder} and download again."
                )
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
        raise DatasetCorruptError(
            f"cannot read {folder / 'batches.meta'} ({exc}). Fix: delete {folder} and download again."
        ) from exc
    train_set = ImageDataset(
        torch.from_numpy(np.concatenate([x for x, _ in train])), torch.from_numpy(np.concatenate([y for _, y in train]))
    )
    test_set = ImageDataset(torch.from_numpy(test_x.copy()), torch.from_numpy(test_y))
    kind = kinds.pop() if kinds else "unverified"
    return DataBundle(
        "cifar10",
        train_set,
        test_set,
        classes,
        CIFAR10_MEAN,
        CIFAR10_STD,
        source=f"{folder} ({kind})",
        notes={"files": kind},
    )


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
    raise _missing(
        "TinyImageNet",
        root,
        [root / n for n in TINY_FOLDERS] + [archive],
        "download it with load_dataset('tinyimagenet', download=True) or unpack tiny-imagenet-200.zip there",
    )


def _decode(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except Exception as exc:
        raise DatasetCorruptError(
            f"cannot decode image {path} ({exc}). Fix: restore that file from the original "
            f"tiny-imagenet-200.zip, or delete the folder and download again."
        ) from exc
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
            raise DatasetCorruptError(
                f"{image_dir} is missing although {wnid} is in wnids.txt. Fix: re-extract the dataset."
            )
        files = sorted(image_dir.glob("*.JPEG"))
        if not files:
            raise DatasetCorruptError(
                f"{image_dir} holds no images although {wnid} is in wnids.txt (a class with no training images "
                f"would silently be left out). Fix: re-extract the dataset."
            )
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
        "train_x": images["train"],
        "train_y": np.asarray(train_labels, dtype=np.int64),
        "val_x": images["val"],
        "val_y": np.asarray(val_labels, dtype=np.int64),
        "wnids": np.asarray(wnids),
        "names": np.asarray([words.get(w, w) for w in wnids]),
    }


def _tiny_manifest(folder: Path) -> str:
    """A digest of every file the decoded cache is made from (path, size, modification time): a replaced, added or
    removed image, or a changed annotation file, gives another cache. Costs a `stat` per file, not a decode."""
    annotations = folder / "val" / "val_annotations.txt"
    if not annotations.exists():
        raise DatasetCorruptError(f"{annotations} is missing. Fix: re-extract the dataset (val/ comes with the zip).")
    digest = hashlib.sha256(str(folder.resolve()).encode())
    files = [folder / "wnids.txt", annotations, *sorted((folder / "train").glob("*/images/*.JPEG"))]
    files += sorted((folder / "val" / "images").glob("*.JPEG")) + [p for p in [folder / "words.txt"] if p.exists()]
    for path in files:
        info = path.stat()
        digest.update(f"{path.relative_to(folder)}|{info.st_size}|{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def load_tinyimagenet(
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
    progress_bar: bool = True,
) -> DataBundle:
    """Load TinyImageNet (``tiny-imagenet-200`` layout; the val split serves as test) as uint8 tensors.

    The JPEGs are decoded once and cached as one ``.npy`` bundle in `cache_dir` (see `resolve_cache_dir`).
    """
    root = resolve_data_dir(root)
    folder = _obtain_tiny(root, download)
    place = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]  # one cache per folder: older ones go
    cache = resolve_cache_dir(cache_dir) / f"tinyimagenet-{place}-{_tiny_manifest(folder)[:16]}.npz"
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
        for stale in cache.parent.glob(f"tinyimagenet-{place}-*.npz"):  # decoded from files since changed
            if stale != cache:
                stale.unlink(missing_ok=True)
    train = ImageDataset(torch.from_numpy(arrays["train_x"]), torch.from_numpy(arrays["train_y"]))
    test = ImageDataset(torch.from_numpy(arrays["val_x"]), torch.from_numpy(arrays["val_y"]))
    names = tuple(str(n) for n in arrays["names"])
    return DataBundle(
        "tinyimagenet",
        train,
        test,
        names,
        IMAGENET_MEAN,
        IMAGENET_STD,
        source=str(folder),
        notes={"wnids": tuple(str(w) for w in arrays["wnids"])},
    )
