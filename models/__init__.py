"""Models come from timm; importing this package also registers resnet32 with timm."""
from __future__ import annotations

import timm
from timm.models.resnet import ResNet
from torch import nn

from errors import ConfigError

from . import resnet_cifar  # noqa: F401  registers resnet32

SMALL_IMAGE = 64  # at this side or below, an ImageNet stem (stride 4) leaves too little map for the later stages


CLASSIFIER_INITS = ("model", "pytorch")  # MODEL.classifier_init: the model's own, or nn.Linear's default


def build_model(name: str, num_classes: int, pretrained: bool, img_size: int,
                classifier_init: str = "model") -> tuple[nn.Module, str]:
    """A timm model with a `num_classes` head, and a note on what was adapted. On small images a timm ResNet gets
    the CIFAR stem (3x3 stride-1 convolution, no max-pool) so that 32x32 inputs reach the last stage as 4x4 maps.
    `classifier_init` "pytorch" draws the head again with nn.Linear's default init, as BALMS's classifier has it."""
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes)
    except (OSError, RuntimeError, ConnectionError, ValueError) as error:
        if not pretrained:
            raise
        raise ConfigError(f"MODEL.pretrained: could not fetch weights for {name} ({str(error).splitlines()[0]}); "
                           "set MODEL.pretrained false, or put the weights in the Hugging Face cache") from None
    note = ""
    if isinstance(model, ResNet) and img_size <= SMALL_IMAGE:
        model.conv1 = nn.Conv2d(model.conv1.in_channels, model.conv1.out_channels, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
        note = f"{name}: CIFAR stem (3x3 stride-1 conv, no max-pool) for {img_size}x{img_size} images"
        if pretrained:
            note += "; the pretrained first convolution was replaced and is trained from scratch"
    if classifier_init == "pytorch":
        model.get_classifier().reset_parameters()
    return model, note


def classifier_name(model: nn.Module) -> str:
    """Where the model's classifier (timm's `get_classifier()`) sits in it, as a submodule path, e.g. "fc"."""
    head = model.get_classifier()
    return next(name for name, module in model.named_modules() if module is head)
