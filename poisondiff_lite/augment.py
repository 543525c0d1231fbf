"""Batched data augmentation on whatever device the batch is on: no per-image Python loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad by `padding` and crop back to the original size at a random offset per image.

    Equivalent to torchvision's ``RandomCrop(size, padding)`` applied image by image, done with one gather.
    Works on ``(B, C, H, W)`` tensors of any dtype.
    """
    if padding <= 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    device = images.device
    dy = torch.randint(0, 2 * padding + 1, (b,), device="cpu", generator=generator).to(device)
    dx = torch.randint(0, 2 * padding + 1, (b,), device="cpu", generator=generator).to(device)
    rows = (dy[:, None] + torch.arange(h, device=device)[None, :])  # (B, H)
    cols = (dx[:, None] + torch.arange(w, device=device)[None, :])  # (B, W)
    batch = torch.arange(b, device=device)[:, None, None]
    # advanced indexing on dims 0, 2, 3 puts the channel dim last: (B, H, W, C)
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator).to(images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def augment_batch(images: torch.Tensor, *, crop_padding: int = 4, flip: bool = True,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop (with zero padding) and horizontal flip, batched on the batch's device."""
    if crop_padding:
        images = random_crop(images, crop_padding, generator)
    if flip:
        images = random_flip(images, generator)
    return images
