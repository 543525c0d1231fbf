"""One device-agnostic training loop: whole dataset on the device, augmentation on the device, bf16 on CUDA."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .augment import augment_batch
from .config import TrainConfig
from .data import DataBundle, ImageDataset
from .models import Classifier, build_model
from .utils import eval_mode, get_device, progress

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
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay)


def _autocast(device: torch.device, cfg: TrainConfig) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and cfg.bf16)


def _prepare(images: torch.Tensor, device: torch.device, cfg: TrainConfig) -> torch.Tensor:
    x = images.float().div_(255.0)
    if device.type == "cuda" and cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def train_model(model: nn.Module, train_set: ImageDataset, cfg: TrainConfig, *, seed: int = 0,
                device: torch.device | str = "auto", on_epoch_end: EpochCallback | None = None,
                show_progress: bool = True, desc: str = "training") -> History:
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
    device = get_device(device)
    model.to(device)
    if device.type == "cuda" and cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    train_set = train_set.to(device)
    # fresh models of one architecture reuse the compiled code (parameters are graph inputs): M runs or V victims
    # pay the compilation once per process
    forward = torch.compile(model) if cfg.compile else model
    n = len(train_set)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, s, steps_per_epoch))
    generator = torch.Generator().manual_seed(seed)
    history = History()
    epochs = progress(range(1, cfg.epochs + 1), enable=show_progress, desc=desc, unit="epoch", leave=False)
    for epoch in epochs:
        start = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        lr_now = optimizer.param_groups[0]["lr"]
        for begin in range(0, n, cfg.batch_size):
            idx = order[begin:begin + cfg.batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on a single example
                continue
            images = augment_batch(train_set.images[idx], crop_padding=cfg.crop_padding, flip=cfg.flip,
                                   generator=generator)
            labels = train_set.labels[idx]
            with _autocast(device, cfg):
                logits = forward(_prepare(images, device, cfg))
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.argmax(1) == labels).sum()
            seen += len(idx)
        loss_value = float(loss_sum) / max(seen, 1)
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"training diverged at epoch {epoch} (loss {loss_value}); lower the lr "
                                     f"(now {cfg.lr}) or check the data")
        history.loss.append(loss_value)
        history.accuracy.append(float(correct) / max(seen, 1))
        history.lr.append(lr_now)
        history.seconds.append(time.perf_counter() - start)
        if show_progress and hasattr(epochs, "set_postfix"):
            epochs.set_postfix(loss=f"{history.loss[-1]:.3f}", acc=f"{history.accuracy[-1]:.3f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch, model)
    return history


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, *, batch_size: int = 1000,
                   device: torch.device | str = "auto", cfg: TrainConfig | None = None) -> torch.Tensor:
    """Logits (float32, on `device`) of uint8 `images` in eval mode; the model's train/eval mode is restored."""
    device = get_device(device)
    cfg = cfg or TrainConfig()
    out = []
    with eval_mode(model):
        for begin in range(0, len(images), batch_size):
            batch = images[begin:begin + batch_size].to(device, non_blocking=True)
            with _autocast(device, cfg):
                out.append(model(_prepare(batch, device, cfg)).float())
    return torch.cat(out) if out else torch.empty(0)


def accuracy(model: nn.Module, dataset: ImageDataset, *, device: torch.device | str = "auto",
             batch_size: int = 1000) -> float:
    """Top-1 accuracy of `model` on `dataset` in eval mode."""
    logits = predict_logits(model, dataset.images, batch_size=batch_size, device=device)
    return float((logits.argmax(1).cpu() == dataset.labels.cpu()).float().mean())


def train_fresh(data: DataBundle, cfg: TrainConfig, *, seed: int = 0, device: torch.device | str = "auto",
                on_epoch_end: EpochCallback | None = None, show_progress: bool = True,
                train_set: ImageDataset | None = None, desc: str = "training") -> tuple[Classifier, History]:
    """Build a model initialised from `seed` and train it on `data.train` (or `train_set`, e.g. a poisoned copy)."""
    torch.manual_seed(seed)
    model = build_model(cfg.model, data.num_classes, mean=data.mean, std=data.std)
    history = train_model(model, train_set if train_set is not None else data.train, cfg, seed=seed, device=device,
                          on_epoch_end=on_epoch_end, show_progress=show_progress, desc=desc)
    return model, history
