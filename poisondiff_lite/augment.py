"""Batched data augmentation on whatever device the batch is on: no per-image Python loop.

The random numbers come from a CPU `torch.Generator`, so a seed gives the same crops and flips on every device. The
training loop draws them for a whole epoch at once (`AugmentDraw.draw`) and copies them to the device in one
non-blocking transfer: a per-batch copy from host memory would make the host wait for the GPU at every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .utils import to_device


@dataclass(frozen=True)
class AugmentDraw:
    """Random crop offsets and flip decisions for a sequence of images, drawn together.

    ``dy``, ``dx`` (crop offsets in ``[0, 2 * padding]``) and ``flips`` (bool) are ``None`` when that augmentation is
    off. Slice it with ``draw[begin:end]`` to get the draw of a batch.
    """

    padding: int
    dy: torch.Tensor | None
    dx: torch.Tensor | None
    flips: torch.Tensor | None
    boxes: torch.Tensor | None = None  # (B, 4) top, left, height, width of a resized crop, in pixels

    @classmethod
    def draw(
        cls,
        n: int,
        *,
        crop_padding: int,
        flip: bool,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        resized_crop: float = 0.0,
        size: tuple[int, int] | None = None,
    ) -> AugmentDraw:
        """Draw for `n` images: crop rows, crop columns, then flips, from `generator` (CPU).

        ``resized_crop > 0`` draws torchvision's ``RandomResizedCrop(size, scale=(resized_crop, 1))`` boxes
        instead of padded crops (needs the image `size`); flips are drawn after them.
        """
        padding = max(int(crop_padding), 0) if not resized_crop else 0
        parts = []
        if padding:
            parts += [torch.randint(0, 2 * padding + 1, (n,), generator=generator) for _ in range(2)]
        if resized_crop:
            if size is None:
                raise ValueError("a resized crop needs the image size")
            parts += list(resized_crop_boxes(n, size, resized_crop, generator).T)
        if flip:
            parts.append((torch.rand(n, generator=generator) < 0.5).long())
        if not parts:
            return cls(0, None, None, None)
        moved = to_device(torch.stack(parts), device)  # one transfer
        dy, dx = (moved[0], moved[1]) if padding else (None, None)
        boxes = moved[:4].T if resized_crop else None
        return cls(padding, dy, dx, moved[-1].bool() if flip else None, boxes)

    def __getitem__(self, index: slice | torch.Tensor) -> AugmentDraw:
        def take(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[index]

        return AugmentDraw(self.padding, take(self.dy), take(self.dx), take(self.flips), take(self.boxes))

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """Crop (after zero padding, or resized) and flip ``(B, C, H, W)`` images; B must match the draw."""
        if self.dy is not None:
            images = crop_at(images, self.dy, self.dx, self.padding)
        if self.boxes is not None:
            images = resize_boxes(images, self.boxes)
        if self.flips is not None:
            images = torch.where(self.flips[:, None, None, None], images.flip(-1), images)
        return images


def resized_crop_boxes(
    n: int,
    size: tuple[int, int],
    min_scale: float,
    generator: torch.Generator | None = None,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> torch.Tensor:
    """``(n, 4)`` long boxes (top, left, height, width) drawn as torchvision's ``RandomResizedCrop.get_params``:
    area a fraction U(min_scale, 1) of the image, log aspect ratio uniform in `ratio`, the first of `attempts`
    draws that fits, else the whole image; then a uniform position."""
    h, w = size
    area = h * w * torch.empty(n, attempts).uniform_(min_scale, 1.0, generator=generator)
    log_ratio = torch.empty(n, attempts).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_ratio)
    widths = torch.sqrt(area * aspect).round().long()
    heights = torch.sqrt(area / aspect).round().long()
    fits = (widths > 0) & (widths <= w) & (heights > 0) & (heights <= h)
    first = fits.float().argmax(1)
    found = fits.any(1)
    rows = torch.arange(n)
    bh = torch.where(found, heights[rows, first], torch.full((n,), h))
    bw = torch.where(found, widths[rows, first], torch.full((n,), w))
    top = (torch.rand(n, generator=generator) * (h - bh + 1)).floor().long()
    left = (torch.rand(n, generator=generator) * (w - bw + 1)).floor().long()
    return torch.stack([top, left, bh, bw], dim=1)


def resize_boxes(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Each image's box (top, left, height, width) resized back to the full image size, bilinearly
    (``align_corners=False``, as ``torchvision.transforms.functional.resized_crop``); uint8 stays uint8 (rounded)."""
    b, _, h, w = images.shape
    x = images.float()
    top, left, bh, bw = (boxes[:, k].to(x) for k in range(4))
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = bw / w
    theta[:, 0, 2] = (2 * left + bw) / w - 1
    theta[:, 1, 1] = bh / h
    theta[:, 1, 2] = (2 * top + bh) / h - 1
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8) if images.dtype == torch.uint8 else out.to(images.dtype)


def crop_at(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad by `padding` and crop each image back to its size at offset ``(dy[i], dx[i])``, with one gather."""
    b, _, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = dy.to(device)[:, None] + torch.arange(h, device=device)[None, :]  # (B, H)
    cols = dx.to(device)[:, None] + torch.arange(w, device=device)[None, :]  # (B, W)
    batch = torch.arange(b, device=device)[:, None, None]
    # advanced indexing on dims 0, 2, 3 puts the channel dim last: (B, H, W, C)
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad by `padding` and crop back to the original size at a random offset per image.

    Equivalent to torchvision's ``RandomCrop(size, padding)`` applied image by image, done with one gather.
    Works on ``(B, C, H, W)`` tensors of any dtype.
    """
    return AugmentDraw.draw(
        len(images), crop_padding=padding, flip=False, generator=generator, device=images.device
    ).apply(images)


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2."""
    return AugmentDraw.draw(len(images), crop_padding=0, flip=True, generator=generator, device=images.device).apply(
        images
    )


def augment_batch(
    images: torch.Tensor, *, crop_padding: int = 4, flip: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random crop (with zero padding) and horizontal flip, batched on the batch's device."""
    return AugmentDraw.draw(
        len(images), crop_padding=crop_padding, flip=flip, generator=generator, device=images.device
    ).apply(images)


def shift_bilinear(
    images: torch.Tensor,
    max_shift: float,
    *,
    flip: bool = True,
    generator: torch.Generator | None = None,
    draw: torch.Tensor | None = None,
) -> torch.Tensor:
    """Shift each image by a uniform random offset in ``[-max_shift, max_shift]`` pixels along each axis, resampled
    bilinearly with zeros outside (and flip it with probability 1/2): Witches' Brew's differentiable crafting
    augmentation (its ``RandomTransform``), whose shifts are not whole pixels. Float ``(B, C, H, W)`` images.

    `draw` ``(B, 3)`` in [0, 1] (column shift, row shift, flip) replaces the random numbers from `generator`.
    """
    b, _, h, w = images.shape
    draw = torch.rand(b, 3, generator=generator) if draw is None else draw
    draw = draw.to(device=images.device, dtype=images.dtype)
    theta = torch.zeros(b, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = torch.where(draw[:, 2] < 0.5, -1.0, 1.0) if flip else 1.0
    theta[:, 1, 1] = 1.0
    # align_corners=True: the grid's [-1, 1] spans (size - 1) pixels
    theta[:, 0, 2] = (draw[:, 0] * 2 - 1) * max_shift * 2 / max(w - 1, 1)
    theta[:, 1, 2] = (draw[:, 1] * 2 - 1) * max_shift * 2 / max(h - 1, 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=True)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
