"""Frozen configuration dataclasses with `quick()` / `full()` presets and a stable hash for caching."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .datasets import dataset_names
from .errors import (
    InvalidChoiceError,
    check_choice,
    check_classes,
    check_indices,
    check_number,
    check_positive,
    check_seed,
)
from .loaders import IMAGENET_MEAN, IMAGENET_STD
from .models import model_names

SCHEDULES = ("constant", "step", "onecycle")
NORMALIZATIONS = ("dataset", "imagenet", "none")

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's
EVAL_SPLITS = ("test", "train")
RECIPES = ("victims", "authors")  # the EPA runs: as the victims train (ours) | the authors' EPA-ranking recipes


RUNTIME_ONLY = ("compile", "stack")  # settings that change speed, not results: left out of experiment hashes


class ConfigDict:
    """Serialisation and hashing shared by every frozen config: `to_dict`, `from_dict`, `key`.

    ``ADDED`` names fields added after results were first saved, with their defaults: while a field holds that
    default it is left out of `to_dict`, so of every saved file and hash, and results saved before it existed keep
    their ids. ``HASH_IGNORE`` fields never count in `key` (e.g. a run count that only extends an experiment).
    """

    ADDED: ClassVar[dict[str, Any]] = {}
    HASH_IGNORE: ClassVar[tuple[str, ...]] = ()
    HASH_LENGTH: ClassVar[int] = 12

    def to_dict(self) -> dict[str, Any]:
        """Plain data (nested configs as dicts), for JSON files and hashes."""
        return {
            f.name: _plain(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if not (f.name in self.ADDED and getattr(self, f.name) == self.ADDED[f.name])
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Rebuild from `to_dict`'s output (or its JSON round trip: lists become tuples again)."""
        return cls(**_tuples(data))

    def key(self, *, ignore: tuple[str, ...] | None = None) -> str:
        """Stable short hash of everything but `ignore` (default ``HASH_IGNORE``) and the `RUNTIME_ONLY` settings."""
        ignore = self.HASH_IGNORE if ignore is None else ignore
        data = {k: v for k, v in self.to_dict().items() if k not in ignore}
        return hashlib.sha256(json.dumps(stable_dict(data), sort_keys=True).encode()).hexdigest()[: self.HASH_LENGTH]


def _plain(value: Any) -> Any:
    if isinstance(value, ConfigDict):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


@dataclass(frozen=True)
class TrainConfig(ConfigDict):
    """One clean training recipe."""

    model: str = "resnet18"  # see models.MODELS
    epochs: int = 40  # passes over the training set
    batch_size: int = 128  # examples per SGD step
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # SGD momentum (0 for plain SGD)
    nesterov: bool = True  # Nesterov momentum
    weight_decay: float = 5e-4  # L2 penalty on all parameters
    schedule: str = "step"  # "constant" | "step" | "onecycle"
    milestones: tuple[int, ...] = (14, 25, 35)  # epochs where "step" multiplies the lr by `gamma`
    gamma: float = 0.1  # step-decay factor
    warmup_epochs: float = 1.0  # linear warm-up length for "onecycle"
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    crop_padding: int = 4  # random-crop padding in pixels (0: no crop)
    flip: bool = True  # random horizontal flips
    eval_batch_size: int = 1000  # batch size for evaluation passes
    bf16: bool = True  # bf16 autocast (CUDA only)
    channels_last: bool = True  # channels_last memory format (CUDA only)
    compile: bool | str = False  # torch.compile the model; or a mode, e.g. "reduce-overhead" (speed only, not hashed)
    stack: int = 1  # train this many runs or victims at once as one grouped network (speed option, see stacked.py)
    normalize: str = "dataset"  # "dataset" mean/std (TinyImageNet: ImageNet's) | "imagenet" mean/std | "none" ([0, 1])
    resized_crop: float = 0.0  # > 0: RandomResizedCrop(scale=(this, 1)), no padded crop (authors' TinyImageNet: 0.8)

    ADDED: ClassVar[dict[str, Any]] = {"normalize": "dataset", "resized_crop": 0.0}

    def __post_init__(self) -> None:
        check_choice("model", self.model, model_names())
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("normalize", self.normalize, NORMALIZATIONS)
        check_number("resized_crop", self.resized_crop)
        if not 0 <= self.resized_crop <= 1:
            raise InvalidChoiceError(
                f"resized_crop is the smallest area fraction in [0, 1] (0: off), got {self.resized_crop}"
            )
        check_positive("epochs", self.epochs, integer=True)
        check_positive("batch_size", self.batch_size, integer=True)
        check_number("eval_batch_size", self.eval_batch_size, integer=True)
        check_positive("lr", self.lr)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        check_positive("crop_padding", self.crop_padding, allow_zero=True, integer=True)
        check_positive("stack", self.stack, integer=True)
        if isinstance(self.compile, str):
            check_choice("compile mode", self.compile, COMPILE_MODES)

    @classmethod
    def full(cls, **overrides: Any) -> TrainConfig:
        """The authors' victim-retraining recipe (Witches' Brew "conservative"): ResNet-18, 40 epochs, Nesterov SGD 0.1,
        wd 5e-4, lr x0.1 at epochs 14/25/35, crop + flip. We use it for EPA too (the paper leaves the EPA recipe of
        some tables open)."""
        return dataclasses.replace(cls(), **overrides)

    @classmethod
    def paper_epa(cls, **overrides: Any) -> TrainConfig:
        """The authors' CIFAR-10 EPA-ranking recipe (``epa_rank_cifar10_resnet18.py``): torchvision ResNet-18,
        SGD 0.1 momentum 0.9 wd 5e-4, constant lr, batch 128, no augmentation, no normalisation (``ToTensor`` only)."""
        base = cls(nesterov=False, schedule="constant", milestones=(), crop_padding=0, flip=False, normalize="none")
        return dataclasses.replace(base, **overrides)

    @classmethod
    def paper_correlation(cls, **overrides: Any) -> TrainConfig:
        """The authors' recipe behind the correlation table and budget sweep (``metrics_cifar10_epa_dps_y0.py``):
        as `paper_epa` but plain SGD (no momentum, no weight decay) for 100 epochs."""
        return cls.paper_epa(**{"epochs": 100, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0, **overrides})

    @classmethod
    def paper_tinyimagenet(cls, **overrides: Any) -> TrainConfig:
        """The authors' TinyImageNet EPA recipe (``epa_rank_tinyimagenet_yt0.py``): torchvision VGG-16 (its
        4096-4096 classifier, a C-way last layer), plain SGD lr 0.01 (no momentum, no weight decay), batch 128,
        constant lr, RandomResizedCrop(64, scale 0.8-1) + flip, ImageNet normalisation."""
        base = cls(
            model="vgg16_torchvision",
            lr=0.01,
            momentum=0.0,
            nesterov=False,
            weight_decay=0.0,
            schedule="constant",
            milestones=(),
            crop_padding=0,
            resized_crop=0.8,
            normalize="imagenet",
        )
        return dataclasses.replace(base, **overrides)

    def input_normalisation(
        self, mean: tuple[float, ...], std: tuple[float, ...]
    ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The (mean, std) the model normalises its inputs with, given the data set's own."""
        if self.normalize == "imagenet":
            return IMAGENET_MEAN, IMAGENET_STD
        if self.normalize == "none":
            return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        return tuple(mean), tuple(std)

    @classmethod
    def fast(cls, **overrides: Any) -> TrainConfig:
        """The fast network on a GPU: airbench-style width, large batches, one-cycle lr, a few seconds per run."""
        base = cls(
            model="fastnet",
            epochs=16,
            batch_size=512,
            lr=0.2,
            schedule="onecycle",
            milestones=(),
            label_smoothing=0.1,
            eval_batch_size=2000,
        )
        return dataclasses.replace(base, **overrides)

    @classmethod
    def quick(cls, **overrides: Any) -> TrainConfig:
        """A small fast network for 2 CPU cores: a few seconds per epoch on the 5,000-image CIFAR-10 subset."""
        base = cls(
            model="fastnet_small",
            epochs=6,
            batch_size=250,
            lr=0.2,
            schedule="onecycle",
            milestones=(),
            label_smoothing=0.1,
            eval_batch_size=1000,
        )
        return dataclasses.replace(base, **overrides)


@dataclass(frozen=True)
class TrajectoryConfig(ConfigDict):
    """An EPA experiment: M clean runs of one recipe, every epoch end evaluated on a fixed set of examples."""

    HASH_IGNORE: ClassVar[tuple[str, ...]] = ("runs",)  # more runs extend an experiment

    dataset: str = "cifar10"  # "cifar10" | "tinyimagenet"
    train: TrainConfig = field(default_factory=TrainConfig.full)  # the training recipe of every run
    runs: int = 8  # M: independent runs (seeds seed0, seed0+1, ...)
    seed0: int = 0  # seed of the first run
    eval_split: str = "test"  # which split is recorded ("test": the targets are never trained on)
    classes: tuple[int, ...] | None = None  # keep only these classes (None: all)
    eval_indices: tuple[int, ...] | None = None  # record only these examples of the split (None: all of it)
    store_logits: bool = False  # also store every logit in fp16 (M x N x E x C)

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, dataset_names())
        check_choice("eval_split", self.eval_split, EVAL_SPLITS)
        check_positive("runs", self.runs, integer=True)
        check_seed("seed0", self.seed0, span=self.runs)
        if isinstance(self.train, dict):  # rebuilt from JSON
            object.__setattr__(self, "train", TrainConfig.from_dict(self.train))
        if self.classes is not None:  # the range is checked against the data set when it is loaded
            object.__setattr__(self, "classes", check_classes("classes", self.classes))
        if self.eval_indices is not None:  # the upper end is checked against the split when it is loaded
            object.__setattr__(self, "eval_indices", check_indices("eval_indices", self.eval_indices, noun="position"))

    @classmethod
    def quick(cls, dataset: str = "cifar10", **overrides: Any) -> TrajectoryConfig:
        """CPU-sized: 4 runs x 4 epochs of the small fast network (TinyImageNet: 10 classes, 3 runs x 3 epochs).

        Sized so that the whole quick tutorial stays within about 10 minutes on a slow 2-core machine: each run costs
        about as much as two lines of ``benchmarks/run.py --jobs train --models fast``. The science needs the lab
        preset; quick mode shows the mechanics.
        """
        if dataset == "tinyimagenet":
            base = cls(dataset=dataset, train=TrainConfig.quick(epochs=3), runs=3, classes=tuple(range(10)))
        else:
            base = cls(dataset=dataset, train=TrainConfig.quick(epochs=4), runs=4)
        return dataclasses.replace(base, **overrides)

    @classmethod
    def full(cls, dataset: str = "cifar10", recipe: str = "victims", **overrides: Any) -> TrajectoryConfig:
        """The paper's scale: M = 8 runs x N = 40 epochs of ResNet-18 (CIFAR-10) or VGG-16 (TinyImageNet).

        ``recipe="victims"`` (ours): the runs train as the victims are retrained (Witches' Brew's recipe; VGG at lr
        0.01), so EPA describes the models that get poisoned. ``recipe="authors"``: the authors' EPA-ranking recipes
        (`TrainConfig.paper_epa` for CIFAR-10, `TrainConfig.paper_tinyimagenet`), which differ from their victims'.
        """
        check_choice("recipe", recipe, RECIPES)
        if recipe == "authors":
            train = TrainConfig.paper_epa() if dataset == "cifar10" else TrainConfig.paper_tinyimagenet()
        else:
            train = TrainConfig.full() if dataset == "cifar10" else TrainConfig.full(model="vgg16", lr=0.01)
        base = cls(dataset=dataset, train=train, runs=8)
        return dataclasses.replace(base, **overrides)

    @classmethod
    def preset(
        cls, quick: bool, dataset: str = "cifar10", *, model: str | None = None, **overrides: Any
    ) -> TrajectoryConfig:
        """`quick` or `full` by a flag (the notebooks' one way to pick), optionally with another model (`model` None
        keeps the preset's): ``TrajectoryConfig.preset(QUICK, DATASET, model=MODEL, seed0=SEED)``."""
        config = (cls.quick if quick else cls.full)(dataset, **overrides)
        if model is not None:  # another architecture is another experiment, saved in its own file
            config = dataclasses.replace(config, train=dataclasses.replace(config.train, model=model))
        return config

    @classmethod
    def correlation_table(cls, **overrides: Any) -> TrajectoryConfig:
        """The authors' CIFAR-10 experiment behind their correlation table and budget sweep: 8 runs x 100 epochs
        of plain SGD (`TrainConfig.paper_correlation`)."""
        return dataclasses.replace(cls(dataset="cifar10", train=TrainConfig.paper_correlation(), runs=8), **overrides)

    @classmethod
    def lab(cls, dataset: str = "cifar10", **overrides: Any) -> TrajectoryConfig:
        """Laptop scale, accurate enough to attack: 8 runs x 16 epochs of the small fast network.

        On the 5,000-image CIFAR-10 subset a run reaches about 68 % test accuracy in about a minute on one core; the
        short quick runs (4 epochs, about 47 %) are too inaccurate for gradient matching to transfer to retrained
        victims.
        TinyImageNet keeps its first 10 classes (1,000 training images of 64 x 64 in the offline subset, 500
        validation images): about 50 % validation accuracy, a minute per run on one core (20 classes: 40 %, two).
        """
        check_choice("lab dataset", dataset, dataset_names())
        classes = tuple(range(10)) if dataset == "tinyimagenet" else None
        base = cls(dataset=dataset, train=TrainConfig.quick(epochs=16), runs=8, classes=classes)
        return dataclasses.replace(base, **overrides)


def stable_dict(data: Any) -> Any:
    """`data` without the `RUNTIME_ONLY` keys at any depth (so turning on torch.compile keeps saved results valid)."""
    if isinstance(data, dict):
        return {k: stable_dict(v) for k, v in data.items() if k not in RUNTIME_ONLY}
    if isinstance(data, (list, tuple)):
        return [stable_dict(v) for v in data]
    return data


def _tuples(data: dict[str, Any]) -> dict[str, Any]:
    """JSON turns tuples into lists; turn them back so the frozen dataclasses compare equal."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
