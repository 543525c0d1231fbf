"""Batched data augmentation on whatever device the batch is on: no per-image Python loop.

The random numbers come from a CPU `torch.Generator`, so a seed gives the same crops and flips on every device. The
training loop draws them for a whole epoch at once (`AugmentDraw.draw`) and copies them to the device in one
non-blocking transfer: a per-batch copy from host memory would make the host wait for the GPU at every step.
"""

from __future__ import annotations

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

    @classmethod
    def draw(cls, n: int, *, crop_padding: int, flip: bool, generator: torch.Generator | None = None,
             device: torch.device | str = "cpu") -> AugmentDraw:
        """Draw for `n` images: crop rows, crop columns, then flips, from `generator` (CPU)."""
        padding = max(int(crop_padding), 0)
        parts = []
        if padding:
            parts += [torch.randint(0, 2 * padding + 1, (n,), generator=generator) for _ in range(2)]
        if flip:
            parts.append((torch.rand(n, generator=generator) < 0.5).long())
        if not parts:
            return cls(0, None, None, None)
        moved = to_device(torch.stack(parts), device)  # one transfer
        dy, dx = (moved[0], moved[1]) if padding else (None, None)
        return cls(padding, dy, dx, moved[-1].bool() if flip else None)

    def __getitem__(self, index: slice | torch.Tensor) -> AugmentDraw:
        def take(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[index]

        return AugmentDraw(self.padding, take(self.dy), take(self.dx), take(self.flips))

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """Crop (after zero padding) and flip ``(B, C, H, W)`` images of any dtype; B must match the draw."""
        if self.dy is not None:
            images = crop_at(images, self.dy, self.dx, self.padding)
        if self.flips is not None:
            images = torch.where(self.flips[:, None, None, None], images.flip(-1), images)
        return images


def crop_at(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad by `padding` and crop each image back to its size at offset ``(dy[i], dx[i])``, with one gather."""
    b, _, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = (dy.to(device)[:, None] + torch.arange(h, device=device)[None, :])  # (B, H)
    cols = (dx.to(device)[:, None] + torch.arange(w, device=device)[None, :])  # (B, W)
    batch = torch.arange(b, device=device)[:, None, None]
    # advanced indexing on dims 0, 2, 3 puts the channel dim last: (B, H, W, C)
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad by `padding` and crop back to the original size at a random offset per image.

    Equivalent to torchvision's ``RandomCrop(size, padding)`` applied image by image, done with one gather.
    Works on ``(B, C, H, W)`` tensors of any dtype.
    """
    return AugmentDraw.draw(len(images), crop_padding=padding, flip=False, generator=generator,
                            device=images.device).apply(images)


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2."""
    return AugmentDraw.draw(len(images), crop_padding=0, flip=True, generator=generator,
                            device=images.device).apply(images)


def augment_batch(images: torch.Tensor, *, crop_padding: int = 4, flip: bool = True,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop (with zero padding) and horizontal flip, batched on the batch's device."""
    return AugmentDraw.draw(len(images), crop_padding=crop_padding, flip=flip, generator=generator,
                            device=images.device).apply(images)
