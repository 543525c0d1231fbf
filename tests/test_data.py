"""Loaders on the real offline subsets: shapes, labels, checksums, and clear errors on missing or corrupt data."""

import os
import shutil
import zipfile

import numpy as np
import pytest
import torch

import poisondiff_lite.data as data_mod
from poisondiff_lite import (
    DatasetCorruptError,
    DatasetNotFoundError,
    InvalidChoiceError,
    load_cifar10,
    load_dataset,
    load_tinyimagenet,
    resolve_data_dir,
)
from poisondiff_lite.loaders import CIFAR10_MD5, _md5


def test_cifar10_subset_shapes_labels_and_known_pixels(cifar):
    assert cifar.train.images.shape == (5000, 3, 32, 32) and cifar.train.images.dtype == torch.uint8
    assert cifar.test.images.shape == (1000, 3, 32, 32)
    assert cifar.classes[0] == "airplane" and cifar.classes[1] == "automobile" and cifar.num_classes == 10
    assert set(cifar.train.labels.tolist()) == set(range(10))
    # first pixels and labels of the original batches (dataset README): a frog in train, a cat in test
    assert cifar.train.images[0, 0, 0, :3].tolist() == [59, 43, 50] and int(cifar.train.labels[0]) == 6
    assert cifar.test.images[0, 0, 0, :3].tolist() == [158, 159, 165] and int(cifar.test.labels[0]) == 3
    assert cifar.notes["files"] == "subset"
    counts = np.bincount(cifar.test.labels.numpy(), minlength=10)
    assert counts.sum() == 1000 and counts.min() >= 79


def test_cifar10_checksums_are_the_documented_ones(data_root):
    folder = data_root / "cifar10-subset" / "cifar-10-batches-py"
    for name, digest in CIFAR10_MD5["subset"].items():
        assert _md5(folder / name) == digest


@pytest.fixture()
def cifar_copy(data_root, tmp_path):
    target = tmp_path / "cifar-10-batches-py"
    shutil.copytree(data_root / "cifar10-subset" / "cifar-10-batches-py", target)
    return tmp_path, target


def test_corrupted_cifar_batch_is_detected(cifar_copy):
    root, folder = cifar_copy
    path = folder / "data_batch_2"
    raw = bytearray(path.read_bytes())
    raw[5000] ^= 0xFF  # one flipped byte in the pixel data
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetCorruptError, match="data_batch_2.*delete"):
        load_cifar10(root)


def test_truncated_cifar_batch_is_detected_without_checksums(cifar_copy):
    root, folder = cifar_copy
    path = folder / "test_batch"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DatasetCorruptError, match="cannot read CIFAR-10 batch"):
        load_cifar10(root, verify=False)


def test_missing_dataset_names_the_fix(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="download=True.*POISONDIFF_DATA"):
        load_cifar10(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="tiny-imagenet-200"):
        load_tinyimagenet(tmp_path)


def test_failed_download_names_the_fix(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DatasetNotFoundError, match="downloading it failed.*Network is unreachable.*internet"):
        load_cifar10(tmp_path, download=True)


def test_data_dir_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("POISONDIFF_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("POISONDIFF_DATA")
    assert resolve_data_dir().name == "data"


def test_unknown_dataset_and_class_list_the_choices(cifar):
    with pytest.raises(InvalidChoiceError, match="'mnist'.*'cifar10', 'tinyimagenet'"):
        load_dataset("mnist")
    assert cifar.class_index("airplane") == 0 and cifar.class_index(3) == 3
    with pytest.raises(InvalidChoiceError, match="'aeroplane'.*'airplane'"):
        cifar.class_index("aeroplane")
    with pytest.raises(InvalidChoiceError, match="class index"):
        cifar.class_index(10)


def test_tinyimagenet_subset(tiny):
    assert tiny.train.images.shape == (20000, 3, 64, 64) and tiny.test.images.shape == (10000, 3, 64, 64)
    assert tiny.num_classes == 200
    assert tiny.notes["wnids"][0] == "n01443537" and tiny.classes[0] == "goldfish, Carassius auratus"
    assert tiny.class_index("goldfish") == 0 and tiny.class_index("n01629819") == 1
    assert np.all(np.bincount(tiny.train.labels.numpy()) == 100)
    assert np.all(np.bincount(tiny.test.labels.numpy()) == 50)
    small = tiny.select_classes([3, 0])
    assert small.classes == (tiny.classes[3], tiny.classes[0])
    assert len(small.train) == 200 and set(small.test.labels.tolist()) == {0, 1}
    torch.testing.assert_close(small.train.images[small.train.labels == 1], tiny.train.images[tiny.train.labels == 0])


def _mini_tiny(src, dst, wnids):
    """A two-class copy of the standard layout, for the zip and corruption tests."""
    dst.mkdir()
    (dst / "wnids.txt").write_text("\n".join(wnids) + "\n")
    shutil.copy(src / "words.txt", dst / "words.txt")
    for w in wnids:
        shutil.copytree(src / "train" / w, dst / "train" / w)
    annotations = (src / "val" / "val_annotations.txt").read_text().splitlines()
    lines = [line for line in annotations if line.split("\t")[1] in wnids]
    (dst / "val" / "images").mkdir(parents=True)
    for line in lines:
        shutil.copy(src / "val" / "images" / line.split("\t")[0], dst / "val" / "images")
    (dst / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def test_tinyimagenet_from_zip(data_root, tmp_path):
    src = data_root / "tiny-imagenet-200-subset"
    build = tmp_path / "build"
    build.mkdir()
    _mini_tiny(src, build / "tiny-imagenet-200", ["n01629819", "n01443537"])
    root = tmp_path / "root"
    root.mkdir()
    with zipfile.ZipFile(root / "tiny-imagenet-200.zip", "w") as zf:
        for path in (build / "tiny-imagenet-200").rglob("*"):
            zf.write(path, path.relative_to(build))
    bundle = load_tinyimagenet(root, cache_dir=tmp_path / "cache", progress_bar=False)
    assert bundle.notes["wnids"] == ("n01443537", "n01629819")  # sorted, whatever wnids.txt says
    assert bundle.train.images.shape == (200, 3, 64, 64) and bundle.test.images.shape == (100, 3, 64, 64)
    assert list(tmp_path.joinpath("cache").glob("*.npz"))  # decoded once, cached


def test_corrupt_jpeg_names_the_file(data_root, tmp_path):
    folder = tmp_path / "tiny-imagenet-200"
    _mini_tiny(data_root / "tiny-imagenet-200-subset", folder, ["n01443537"])
    victim = sorted((folder / "train" / "n01443537" / "images").glob("*.JPEG"))[3]
    victim.write_bytes(b"\xff\xd8 garbage")
    with pytest.raises(DatasetCorruptError, match=victim.name):
        load_tinyimagenet(tmp_path, cache_dir=tmp_path / "cache", progress_bar=False)


def test_the_tinyimagenet_cache_follows_the_files(data_root, tmp_path):
    """A replaced image (same count), an emptied class and a missing annotation file are seen, not served from the
    cache of what was there before."""
    folder = tmp_path / "tiny-imagenet-200"
    _mini_tiny(data_root / "tiny-imagenet-200-subset", folder, ["n01443537", "n01629819"])
    load = lambda: load_tinyimagenet(tmp_path, cache_dir=tmp_path / "cache", progress_bar=False)  # noqa: E731
    before = load()
    images = sorted((folder / "train" / "n01443537" / "images").glob("*.JPEG"))
    shutil.copy(images[1], images[0])  # another picture under the same name: the file count is unchanged
    os.utime(images[0], ns=(1, 1))
    after = load()
    assert torch.equal(after.train.images[0], after.train.images[1])
    assert not torch.equal(after.train.images[0], before.train.images[0]) and len(after.train) == len(before.train)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1  # the cache of the replaced files is gone
    annotations = folder / "val" / "val_annotations.txt"
    annotations.rename(tmp_path / "moved.txt")
    with pytest.raises(DatasetCorruptError, match="val_annotations.txt is missing"):
        load()
    (tmp_path / "moved.txt").rename(annotations)
    for image in images:
        image.unlink()
    with pytest.raises(DatasetCorruptError, match="holds no images"):
        load()


def test_bundle_moves_whole_to_device(cifar):
    moved = cifar.to("cpu")
    assert moved.train.device.type == "cpu" and len(moved.train) == 5000
    assert data_mod.ImageDataset(moved.test.images[:2], moved.test.labels[:2]).float_images().max() <= 1.0
