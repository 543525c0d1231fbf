"""Several models of one architecture as one grouped network, so V small runs train in one pass.

Stacking V models concatenates their channels: every convolution gets V times the channels and V times the groups,
every BatchNorm covers the V channel blocks, and the V linear heads each read their own feature block. Member v only
ever sees its own channel block, so the stacked network computes what the V models compute (up to the summation
order of floats), its loss is the sum of their losses, and one SGD step on it is one SGD step on each of them.

This pays where a single small model leaves the device idle (a fast network on a GPU: one kernel launch per layer
for V runs instead of V). On a CPU grouped convolutions are slower than V separate ones; see benchmarks/RESULTS.md.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torchvision

from .errors import InvalidChoiceError
from .models import Classifier

# modules that act on each channel on its own: they are shared as they are
CHANNELWISE = (
    nn.GELU,
    nn.ReLU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Flatten,
    nn.Identity,
    nn.Dropout,
)
# containers whose forward only chains children, adds tensors or flattens: their children are stacked
CONTAINERS = (
    nn.Sequential,
    torchvision.models.resnet.BasicBlock,
    torchvision.models.resnet.Bottleneck,
    torchvision.models.ResNet,
)


def unstackable_part(model: nn.Module) -> str | None:
    """The first part of a `Classifier` that cannot be stacked (its class name), or None when all of it can."""
    if not isinstance(model, Classifier):
        return type(model).__name__
    if not isinstance(model.head, nn.Linear):
        return type(model.head).__name__

    def visit(module: nn.Module) -> str | None:
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d, *CHANNELWISE)):
            return None
        if isinstance(module, CONTAINERS) and not any(True for _ in module.parameters(recurse=False)):
            for child in module.children():
                bad = visit(child)
                if bad:
                    return bad
            return None
        return type(module).__name__

    return visit(model.body)


class StackedLinear(nn.Module):
    """V linear layers at once: input ``(B, V*D)``, output ``(B, V, K)``; weight ``(V, K, D)``, bias ``(V, K)``."""

    def __init__(self, members: int, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.members = members
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(members, out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.einsum("bvd,vkd->bvk", x.reshape(x.shape[0], self.members, -1), self.weight)
        return out if self.bias is None else out + self.bias


def _widened(module: nn.Module, members: int) -> nn.Module:
    """An empty copy of `module` holding `members` copies of its channels (weights are loaded afterwards)."""
    if isinstance(module, nn.Conv2d):
        c = module
        return nn.Conv2d(
            c.in_channels * members,
            c.out_channels * members,
            c.kernel_size,
            c.stride,
            c.padding,
            c.dilation,
            c.groups * members,
            c.bias is not None,
            c.padding_mode,
        )
    if isinstance(module, nn.BatchNorm2d):
        return nn.BatchNorm2d(
            module.num_features * members, module.eps, module.momentum, module.affine, module.track_running_stats
        )
    if isinstance(module, CHANNELWISE):
        return copy.deepcopy(module)
    wide = copy.copy(module)  # a container: same forward, widened children
    wide._modules = {name: _widened(child, members) for name, child in module.named_children()}
    return wide


class StackedClassifier(nn.Module):
    """V `Classifier`s of one architecture as one network.

    Input ``(B, 3, H, W)`` (every member sees the same images, e.g. for evaluation) or ``(B, 3V, H, W)`` (member v
    sees channels ``3v:3v+3``, e.g. its own training batch); output ``(B, V, K)``.
    """

    def __init__(self, models: list[Classifier]) -> None:
        super().__init__()
        if not models:
            raise InvalidChoiceError("stack at least one model")
        bad = unstackable_part(models[0])
        if bad:
            raise InvalidChoiceError(f"cannot stack models containing {bad}; train them one at a time (stack=1)")
        template = models[0]
        self.members = len(models)
        self.head_scale = template.head_scale
        self.register_buffer("mean", torch.cat([m.mean for m in models], dim=1))
        self.register_buffer("std", torch.cat([m.std for m in models], dim=1))
        self.body = _widened(template.body, self.members)
        head = template.head
        self.head = StackedLinear(self.members, head.in_features, head.out_features, head.bias is not None)
        self.to(device=template.mean.device)
        states = [m.state_dict() for m in models]
        shapes = {k: v.shape for k, v in states[0].items()}
        if any({k: v.shape for k, v in s.items()} != shapes for s in states[1:]):
            raise InvalidChoiceError("models of different architectures or sizes cannot be stacked")
        self.load_state_dict({key: self._stacked(key, [s[key] for s in states]) for key in states[0]})

    @staticmethod
    def _stacked(key: str, tensors: list[torch.Tensor]) -> torch.Tensor:
        if key.startswith("head."):
            return torch.stack(tensors)
        if key in ("mean", "std"):
            return torch.cat(tensors, dim=1)
        if tensors[0].dim() == 0:  # BatchNorm's num_batches_tracked: the same for every member
            return tensors[0]
        return torch.cat(tensors)

    def member_state(self, v: int) -> dict[str, torch.Tensor]:
        """Member `v`'s weights and buffers under the names of a plain `Classifier`."""
        state = {}
        for key, value in self.state_dict().items():
            if key.startswith("head."):
                state[key] = value[v]
            elif key in ("mean", "std"):
                state[key] = value.chunk(self.members, dim=1)[v]
            elif value.dim() == 0:
                state[key] = value
            else:
                state[key] = value.chunk(self.members)[v]
        return state

    def unstack_into(self, models: list[Classifier]) -> list[Classifier]:
        """Copy every member's weights and buffers back into `models` (one per member); returns them."""
        if len(models) != self.members:
            raise InvalidChoiceError(f"{self.members} members but {len(models)} models to fill")
        for v, model in enumerate(models):
            model.load_state_dict(self.member_state(v))  # copies into the model's own tensors
        return models

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.mean.shape[1]:
            x = x.repeat(1, self.members, 1, 1)
        features = self.body((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))
        return self.head(features) * self.head_scale
