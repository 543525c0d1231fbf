"""Models: torchvision ResNet-18 and VGG-13/16 (compact 512 -> C head, or torchvision's own 4096-4096 classifier as
the authors used it: ``vgg16_torchvision``), and a fast airbench-style network.

Every model is a `Classifier`: it takes float images in [0, 1] (normalisation is its first layer, so attacks work in
pixel space), has a `features(x)` body and a linear `head`. The head split serves the last-layer variant of δ and
feature-collision attacks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from .errors import InvalidChoiceError, check_choice
from .plugins import load_plugins

MODELS = (
    "fastnet",
    "fastnet_small",
    "resnet18",
    "resnet18_cifar",
    "vgg13",
    "vgg16",
    "vgg13_torchvision",
    "vgg16_torchvision",
)


class Classifier(nn.Module):
    """``head(body(normalise(x)))`` with `x` float in [0, 1], shape ``(B, 3, H, W)``."""

    def __init__(
        self, body: nn.Module, head: nn.Linear, mean: tuple[float, ...], std: tuple[float, ...], head_scale: float = 1.0
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.body = body
        self.head = head
        self.head_scale = head_scale

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, D)`` of images in [0, 1]."""
        return self.body((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)) * self.head_scale


# -----------------------------------------------------------------------------------------------------------------
#  fast network (after KellerJordan/cifar10-airbench: conv groups with max-pool, BN, GELU; no residuals)
# -----------------------------------------------------------------------------------------------------------------
class ConvGroup(nn.Sequential):
    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__(
            nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(channels_out, momentum=0.4),
            nn.GELU(),
            nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels_out, momentum=0.4),
            nn.GELU(),
        )


def fast_body(widths: tuple[int, int, int, int], stem_stride: int) -> nn.Sequential:
    """Patch stem (2x2 conv), three conv groups, global max-pool: any input size divisible by 8·stride."""
    stem, w1, w2, w3 = widths
    return nn.Sequential(
        nn.Conv2d(3, stem, kernel_size=2, stride=stem_stride, padding=0, bias=True),
        nn.GELU(),
        ConvGroup(stem, w1),
        ConvGroup(w1, w2),
        ConvGroup(w2, w3),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
    )


FAST_SPECS = {
    # name: (widths, stem stride) — "fastnet" is airbench94's width on the GPU; "fastnet_small" fits a CPU quick mode
    "fastnet": ((24, 64, 256, 256), 1),
    "fastnet_small": ((32, 64, 128, 128), 2),
}


# -----------------------------------------------------------------------------------------------------------------
#  torchvision models
# -----------------------------------------------------------------------------------------------------------------
def _torchvision_models():
    """torchvision's model zoo, imported on first use: importing it pulls in torch._dynamo (about 1.5 s on 2 CPU
    cores), which every notebook kernel and CLI call would otherwise pay at `import poisondiff_lite`."""
    import torchvision.models

    return torchvision.models


def _resnet18(num_classes: int, cifar_stem: bool) -> tuple[nn.Module, nn.Linear]:
    net = _torchvision_models().resnet18(weights=None, num_classes=num_classes)
    if cifar_stem:  # 3x3 stem, no max-pool: the usual CIFAR variant (the authors use the ImageNet stem)
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    head = net.fc
    net.fc = nn.Identity()
    return net, head


def _vgg(depth: int, num_classes: int) -> tuple[nn.Module, nn.Linear]:
    # torchvision's VGG features (no BN, as the authors' VGG16); a compact 512 -> classes head instead of the 4096-wide
    # ImageNet classifier, which would hold 134M parameters for 32x32 or 64x64 inputs
    net = getattr(_torchvision_models(), f"vgg{depth}")(weights=None)
    body = nn.Sequential(net.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    head = nn.Linear(512, num_classes)
    nn.init.normal_(head.weight, 0, 0.01)
    nn.init.zeros_(head.bias)
    return body, head


def _vgg_torchvision(depth: int, num_classes: int) -> tuple[nn.Module, nn.Linear]:
    # torchvision's VGG as it is, the authors' model: features, 7x7 average pool, the 4096-4096 classifier (ReLU,
    # dropout); only its last layer becomes a `num_classes`-way head (about 134M parameters in all)
    net = getattr(_torchvision_models(), f"vgg{depth}")(weights=None, num_classes=num_classes)
    head = net.classifier[-1]
    body = nn.Sequential(net.features, net.avgpool, nn.Flatten(), *net.classifier[:-1])
    return body, head


CUSTOM_MODELS: dict[str, Callable[[int], tuple[nn.Module, nn.Linear]]] = {}


def register_model(name: str, factory: Callable[[int], tuple[nn.Module, nn.Linear]]) -> None:
    """Make your own architecture usable by name (`TrainConfig(model=name)`, the recorder, studies).

    ``factory(num_classes)`` returns ``(body, head)``: a module mapping normalised images to features ``(B, D)``, and
    an ``nn.Linear(D, num_classes)``. The package adds the normalisation in front, so attacks work in pixel space.
    """
    if name in MODELS:
        raise InvalidChoiceError(f"{name!r} is a built-in model; register yours under another name")
    CUSTOM_MODELS[str(name)] = factory


def model_names() -> tuple[str, ...]:
    """The built-in models and any registered with `register_model`."""
    load_plugins()  # the modules named in $POISONDIFF_PLUGINS register theirs
    return MODELS + tuple(CUSTOM_MODELS)


def build_model(
    name: str,
    num_classes: int,
    *,
    mean: tuple[float, ...] = (0.5, 0.5, 0.5),
    std: tuple[float, ...] = (0.25, 0.25, 0.25),
) -> Classifier:
    """Build a fresh, randomly initialised model (seed with `torch.manual_seed` first for reproducibility).

    Parameters
    ----------
    name : one of ``MODELS``.
    num_classes : size of the output layer.
    mean, std : per-channel normalisation applied inside the model (take them from the `DataBundle`).
    """
    check_choice("model", name, model_names())
    if name in CUSTOM_MODELS:
        body, head = CUSTOM_MODELS[name](num_classes)
        if not isinstance(head, nn.Linear) or head.out_features != num_classes:
            raise InvalidChoiceError(f"model {name!r}: the factory must return (body, nn.Linear(D, {num_classes}))")
        return Classifier(body, head, mean, std)
    if name in FAST_SPECS:
        widths, stride = FAST_SPECS[name]
        head = nn.Linear(widths[-1], num_classes, bias=False)
        return Classifier(fast_body(widths, stride), head, mean, std, head_scale=1 / 9)
    if name.startswith("resnet18"):
        body, head = _resnet18(num_classes, cifar_stem=name == "resnet18_cifar")
    elif name.endswith("_torchvision"):
        body, head = _vgg_torchvision(int(name[3:5]), num_classes)
    else:
        body, head = _vgg(int(name[3:]), num_classes)
    return Classifier(body, head, mean, std)
