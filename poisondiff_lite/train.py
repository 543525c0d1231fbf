"""One device-agnostic training loop: whole dataset on the device, augmentation on the device, bf16 on CUDA."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .augment import AugmentDraw
from .config import TrainConfig
from .data import DataBundle, ImageDataset
from .models import Classifier, build_model
from .utils import eval_mode, get_device, progress, to_device

EpochCallback = Callable[[int, nn.Module], None]


@dataclass
class History:
    """Per-epoch training statistics of one run."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier of `cfg.lr` at optimiser step `step` (0-based)."""
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        epoch = step // steps_per_epoch
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    total = cfg.epochs * steps_per_epoch  # "onecycle": linear warm-up, then linear decay to zero
    warm = max(1, int(cfg.warmup_epochs * steps_per_epoch))
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / max(1, total - warm))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    return torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )


def _accelerated(device: torch.device) -> bool:
    """Whether the CUDA speed-ups (bf16 autocast, channels_last, cuDNN autotuning) apply on `device`; tests force
    them on a CPU."""
    return device.type == "cuda"


@contextmanager
def _cudnn_autotune(device: torch.device) -> Iterator[None]:
    """On CUDA, let cuDNN time its convolution algorithms once per shape (grouped convolutions of stacked runs gain
    most); the global setting is restored afterwards."""
    if not _accelerated(device):
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def _autocast(device: torch.device, cfg: TrainConfig) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=_accelerated(device) and cfg.bf16)


def new_model(cfg: TrainConfig, data: DataBundle) -> nn.Module:
    """A fresh model of the recipe's architecture for `data`, normalising inputs as the recipe says (seed first)."""
    mean, std = cfg.input_normalisation(data.mean, data.std)
    return build_model(cfg.model, data.num_classes, mean=mean, std=std)


def _prepare(images: torch.Tensor, device: torch.device, cfg: TrainConfig) -> torch.Tensor:
    """uint8 images as floats in [0, 1] of the default dtype (float32 unless a test asks for float64)."""
    x = images.to(torch.get_default_dtype()).div_(255.0)
    if _accelerated(device) and cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def train_model(
    model: nn.Module,
    train_set: ImageDataset,
    cfg: TrainConfig,
    *,
    seed: int = 0,
    device: torch.device | str = "auto",
    on_epoch_end: EpochCallback | None = None,
    show_progress: bool = True,
    desc: str = "training",
) -> History:
    """Train `model` in place on `train_set` with recipe `cfg`.

    Parameters
    ----------
    model : a `Classifier` taking float images in [0, 1].
    train_set : uint8 images and labels; moved to `device` if not already there.
    cfg : the recipe (optimiser, schedule, augmentation, epochs).
    seed : seeds the data order and augmentation (the initialisation is seeded by whoever built the model).
    on_epoch_end : called as ``on_epoch_end(epoch, model)`` after each epoch (1-based), e.g. by the recorder.

    Returns
    -------
    History with per-epoch mean loss, training accuracy (on augmented batches), lr and wall time.
    """
    return _fit(
        model, train_set, cfg, [seed], device=device, on_epoch_end=on_epoch_end, show_progress=show_progress, desc=desc
    )[0]


def _fit(
    model: nn.Module,
    train_set: ImageDataset,
    cfg: TrainConfig,
    seeds: list[int],
    *,
    device: torch.device | str,
    on_epoch_end: EpochCallback | None,
    show_progress: bool,
    desc: str,
) -> list[History]:
    """The training loop for one model (one seed) or a `StackedClassifier` (one seed per member).

    Member v draws its data order and augmentation from its own generator seeded ``seeds[v]``, exactly as a model
    trained alone would; its batch fills channels ``3v:3v+3`` of the stacked input. The loss is the sum of the members'
    mean losses, so each member's gradient is its own.
    """
    device = get_device(device)
    with _cudnn_autotune(device):
        return _fit_on(model, train_set, cfg, seeds, device, on_epoch_end, show_progress, desc)


def _fit_on(
    model: nn.Module,
    train_set: ImageDataset,
    cfg: TrainConfig,
    seeds: list[int],
    device: torch.device,
    on_epoch_end: EpochCallback | None,
    show_progress: bool,
    desc: str,
) -> list[History]:
    model.to(device)
    if _accelerated(device) and cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    train_set = train_set.to(device)
    # fresh models of one architecture reuse the compiled code (parameters are graph inputs): M runs or V victims
    # pay the compilation once per process
    # ("reduce-overhead" replays the forward and backward kernels as CUDA graphs: for many small steps)
    forward = model
    if cfg.compile:
        forward = torch.compile(model, mode=cfg.compile if isinstance(cfg.compile, str) else None)
    members = len(seeds)
    n = len(train_set)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, s, steps_per_epoch))
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    histories = [History() for _ in seeds]
    epochs = progress(range(1, cfg.epochs + 1), enable=show_progress, desc=desc, unit="epoch", leave=False)
    for epoch in epochs:
        start = time.perf_counter()
        model.train()
        # the epoch's data order, crops and flips, drawn per member and copied to the device once: a copy per batch
        # would make the host wait for the GPU at every step
        orders = [to_device(torch.randperm(n, generator=g), device) for g in generators]
        draws = [
            AugmentDraw.draw(
                n,
                crop_padding=cfg.crop_padding,
                flip=cfg.flip,
                generator=g,
                device=device,
                resized_crop=cfg.resized_crop,
                size=tuple(train_set.images.shape[-2:]),
            )
            for g in generators
        ]
        loss_sum = torch.zeros(members, device=device)
        correct = torch.zeros(members, device=device, dtype=torch.long)
        seen = 0
        lr_now = optimizer.param_groups[0]["lr"]
        for begin in range(0, n, cfg.batch_size):
            batches = [order[begin : begin + cfg.batch_size] for order in orders]
            if len(batches[0]) < 2:  # BatchNorm cannot train on a single example
                continue
            images = torch.cat(
                [
                    draw[begin : begin + cfg.batch_size].apply(train_set.images[idx])
                    for idx, draw in zip(batches, draws)
                ],
                dim=1,
            )
            labels = torch.stack([train_set.labels[idx] for idx in batches], dim=1)  # (B, V)
            with _autocast(device, cfg):
                logits = forward(_prepare(images, device, cfg))
            logits = logits.to(torch.get_default_dtype()).reshape(labels.shape + (-1,))  # (B, V, K), fp32 from bf16
            losses = (
                F.cross_entropy(
                    logits.flatten(0, 1), labels.flatten(), reduction="none", label_smoothing=cfg.label_smoothing
                )
                .view(labels.shape)
                .mean(0)
            )
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            scheduler.step()
            loss_sum += losses.detach() * len(labels)
            correct += (logits.argmax(-1) == labels).sum(0)
            seen += len(labels)
        loss_values = (loss_sum / max(seen, 1)).tolist()
        accuracies = (correct.float() / max(seen, 1)).tolist()
        if not all(math.isfinite(v) for v in loss_values):
            raise FloatingPointError(
                f"training diverged at epoch {epoch} (loss {max(loss_values)}); lower the lr "
                f"(now {cfg.lr}) or check the data"
            )
        seconds = time.perf_counter() - start
        for history, loss_value, acc in zip(histories, loss_values, accuracies):
            history.loss.append(loss_value)
            history.accuracy.append(acc)
            history.lr.append(lr_now)
            history.seconds.append(seconds)
        if show_progress and hasattr(epochs, "set_postfix"):
            epochs.set_postfix(loss=f"{np.mean(loss_values):.3f}", acc=f"{np.mean(accuracies):.3f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch, model)
    return histories


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    *,
    batch_size: int = 1000,
    device: torch.device | str = "auto",
    cfg: TrainConfig | None = None,
) -> torch.Tensor:
    """Logits (float32, on `device`) of uint8 `images` in eval mode; the model's train/eval mode is restored."""
    device = get_device(device)
    cfg = cfg or TrainConfig()
    out = []
    with eval_mode(model):
        for begin in range(0, len(images), batch_size):
            batch = images[begin : begin + batch_size].to(device, non_blocking=True)
            with _autocast(device, cfg):
                out.append(model(_prepare(batch, device, cfg)).float())
    return torch.cat(out) if out else torch.empty(0)


def accuracy(
    model: nn.Module, dataset: ImageDataset, *, device: torch.device | str = "auto", batch_size: int = 1000
) -> float:
    """Top-1 accuracy of `model` on `dataset` in eval mode."""
    logits = predict_logits(model, dataset.images, batch_size=batch_size, device=device)
    return float((logits.argmax(1).cpu() == dataset.labels.cpu()).float().mean())


def train_fresh(
    data: DataBundle,
    cfg: TrainConfig,
    *,
    seed: int = 0,
    device: torch.device | str = "auto",
    on_epoch_end: EpochCallback | None = None,
    show_progress: bool = True,
    train_set: ImageDataset | None = None,
    desc: str = "training",
) -> tuple[Classifier, History]:
    """Build a model initialised from `seed` and train it on `data.train` (or `train_set`, e.g. a poisoned copy)."""
    callback = None if on_epoch_end is None else (lambda epoch, model, seeds: on_epoch_end(epoch, model))
    [(_, model, history)] = next(
        train_fresh_many(
            data,
            cfg,
            [seed],
            device=device,
            on_epoch_end=callback,
            show_progress=show_progress,
            train_set=train_set,
            desc=desc,
        )
    )
    return model, history


GroupCallback = Callable[[int, nn.Module, list[int]], None]


def train_fresh_many(
    data: DataBundle,
    cfg: TrainConfig,
    seeds: Iterable[int],
    *,
    device: torch.device | str = "auto",
    on_epoch_end: GroupCallback | None = None,
    show_progress: bool = True,
    train_set: ImageDataset | None = None,
    desc: str = "training",
) -> Iterator[list[tuple[int, Classifier, History]]]:
    """`train_fresh` for each seed, ``cfg.stack`` models at a time trained as one grouped network.

    Each model is initialised, ordered and augmented from its own seed as `train_fresh` would; stacking changes only
    the speed (and the float rounding). Architectures that cannot be stacked (see `stacked.unstackable_part`) are
    trained one at a time with a warning.

    Parameters
    ----------
    on_epoch_end : called as ``on_epoch_end(epoch, model, group_seeds)`` after each epoch; ``model(x)`` returns logits
        ``(B, V, K)`` for the V seeds of the group (``(B, K)`` when the group is one plain model).

    Yields
    ------
    One list of ``(seed, model, history)`` per group, in seed order, as soon as the group has finished.
    """
    from .stacked import StackedClassifier, unstackable_part

    device = get_device(device)
    seeds = [int(s) for s in seeds]
    train_set = train_set if train_set is not None else data.train
    stack = cfg.stack
    if stack > 1 and len(seeds) > 1:
        bad = unstackable_part(new_model(cfg, data))
        if bad:
            warnings.warn(
                f"model {cfg.model!r} contains {bad}, which cannot be stacked: training its runs one at "
                f"a time (stack=1)",
                stacklevel=2,
            )
            stack = 1
    for first in range(0, len(seeds), stack):
        group = seeds[first : first + stack]
        label = f"{desc} (seed {group[0]})" if len(group) == 1 else f"{desc} (seeds {group[0]}-{group[-1]})"
        models = []
        for seed in group:
            torch.manual_seed(seed)
            models.append(new_model(cfg, data))
        net = models[0] if len(group) == 1 else StackedClassifier(models)
        callback = None if on_epoch_end is None else (lambda epoch, m, group=group: on_epoch_end(epoch, m, group))
        histories = _fit(
            net, train_set, cfg, group, device=device, on_epoch_end=callback, show_progress=show_progress, desc=label
        )
        if len(group) > 1:
            net.unstack_into(models)
            models = [m.to(device) for m in models]
            del net
        yield list(zip(group, models, histories))
