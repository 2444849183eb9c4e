"""ResNet-10 for ImageNet-LT: the backbone of the decoupling paper (Kang et al., ICLR 2020) and of the Balanced
Softmax paper's ImageNet-LT table. One basic block a stage, ImageNet stem, 5.4 M parameters at 1,000 classes.
timm has no plain ResNet-10 (its resnet10t has a deep, tiered stem and average-pool shortcuts), so this registers
one built from timm's own ResNet."""
from __future__ import annotations

from timm.models import register_model
from timm.models.resnet import BasicBlock, ResNet


@register_model
def resnet10(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-10: timm's ResNet with BasicBlock x (1, 1, 1, 1), 7x7 stem and max-pool, as torchvision lays out
    resnet18, so weight files in torchvision's or timm's key names load."""
    if pretrained:
        raise ValueError("resnet10 has no published pretrained weights on the hub")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return ResNet(block=BasicBlock, layers=(1, 1, 1, 1), **kwargs)
