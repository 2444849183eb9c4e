"""Models come from timm; importing this package also registers resnet32 and resnet10 with timm."""
from __future__ import annotations

import pickle
from pathlib import Path

import timm
from timm.models.resnet import ResNet
from torch import nn

from errors import ConfigError

from . import resnet10, resnet_cifar  # noqa: F401  registers resnet10 and resnet32
from .heads import CLASSIFIERS, NormedLinear
from .resnet_cifar import CifarResNet

SMALL_IMAGE = 64  # at this side or below, an ImageNet stem (stride 4) leaves too little map for the later stages


CLASSIFIER_INITS = ("model", "pytorch")  # MODEL.classifier_init: the model's own, or nn.Linear's default


def build_model(name: str, num_classes: int, pretrained: bool, img_size: int,
                classifier_init: str = "model", pretrained_file: str | None = None,
                classifier: str = "linear") -> tuple[nn.Module, str]:
    """A timm model with a `num_classes` head, and a note on what was adapted. With `pretrained`, the weights come
    from `pretrained_file` when it is given (nothing is downloaded), else from timm's hub or cache. On small images
    a timm ResNet gets the CIFAR stem (3x3 stride-1 convolution, no max-pool) so that 32x32 inputs reach the last
    stage as 4x4 maps. `classifier_init` "pytorch" draws the head again with nn.Linear's default init, as BALMS's
    classifier has it. `classifier` "normed" puts a NormedLinear (LDAM-DRW's cosine head) in the linear head's place."""
    if pretrained and pretrained_file is not None:
        model = timm.create_model(name, num_classes=num_classes)
        note = load_weights(model, Path(pretrained_file))
        return with_head(*adapt(model, name, img_size, True, classifier_init, note), classifier)
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes)
    except (OSError, RuntimeError, ConnectionError, ValueError) as error:
        if not pretrained:
            raise
        raise ConfigError(f"MODEL.pretrained: could not fetch weights for {name} ({str(error).splitlines()[0]}); "
                           "set MODEL.pretrained false, or give a local file in MODEL.pretrained_file") from None
    return with_head(*adapt(model, name, img_size, pretrained, classifier_init, ""), classifier)


def with_head(model: nn.Module, note: str, classifier: str) -> tuple[nn.Module, str]:
    """`model` with a NormedLinear head of its linear head's shape where `classifier` is "normed"."""
    if classifier == "normed":
        linear = model.get_classifier()
        model.set_submodule(classifier_name(model), NormedLinear(linear.in_features, linear.out_features))
        note = "; ".join(filter(None, [note, "normalised linear head (cosine logits)"]))
    return model, note


def adapt(model: nn.Module, name: str, img_size: int, pretrained: bool, classifier_init: str,
          note: str) -> tuple[nn.Module, str]:
    """The CIFAR stem on small images and the head's init, after any weights were loaded; `note` grows."""
    if isinstance(model, ResNet) and img_size <= SMALL_IMAGE:
        model.conv1 = nn.Conv2d(model.conv1.in_channels, model.conv1.out_channels, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
        note = "; ".join(filter(None, [note, f"{name}: CIFAR stem (3x3 stride-1 conv, no max-pool) for "
                                             f"{img_size}x{img_size} images"]))
        if pretrained:
            note += "; the pretrained first convolution was replaced and is trained from scratch"
    elif img_size <= SMALL_IMAGE and not isinstance(model, CifarResNet):
        info = getattr(model, "feature_info", None)
        stride = info[-1].get("reduction") if isinstance(info, list) and info and isinstance(info[-1], dict) else None
        maps = f" (stride {stride}: {max(img_size // stride, 1)}x{max(img_size // stride, 1)} maps in its last " \
               "stage)" if stride else ""
        note = "; ".join(filter(None, [note, f"{name}: ImageNet stem kept on {img_size}x{img_size} images{maps}; "
                                             "only timm ResNets get the CIFAR stem"]))
    if classifier_init == "pytorch":
        model.get_classifier().reset_parameters()
    return model, note


def load_weights(model: nn.Module, path: Path) -> str:
    """Load a local weights file into `model` with timm's checkpoint loader, which takes a bare state dict, a
    training checkpoint's "state_dict" or "model" entry (EMA weights first), DDP's "module." prefixes and
    .safetensors. A head of another number of classes is left as drawn; anything else that does not fit is refused
    in one line."""
    if not path.is_file():
        raise ConfigError(f"MODEL.pretrained_file {path} does not exist: give the path of a local weights file")
    head = {f"{classifier_name(model)}.{key}" for key in model.get_classifier().state_dict()}
    own = model.state_dict()
    dropped = {}  # key -> the file's shape, for a head of another number of classes

    def other_head_dropped(state: dict, _model: nn.Module) -> dict:
        for key in head & state.keys():
            if state[key].shape != own[key].shape:
                dropped[key] = state.pop(key).shape
        return state

    try:
        missing, unexpected = timm.models.load_checkpoint(model, str(path), strict=False,
                                                          filter_fn=other_head_dropped)
    except (RuntimeError, OSError, KeyError, ValueError, EOFError, TypeError, pickle.UnpicklingError) as error:
        detail = " ".join(str(error).split())[:200]
        raise ConfigError(f"MODEL.pretrained_file {path} does not load into {type(model).__name__} "
                          f"({detail}): give weights of MODEL.name's architecture") from None
    missing = [key for key in missing if key not in dropped]
    if missing or unexpected:
        raise ConfigError(f"MODEL.pretrained_file {path} does not fit {type(model).__name__}: it lacks "
                          f"{len(missing)} of the model's weights (e.g. {', '.join(missing[:2]) or '-'}) and has "
                          f"{len(unexpected)} the model does not (e.g. {', '.join(unexpected[:2]) or '-'}): give "
                          "weights of MODEL.name's architecture")
    if dropped:
        return f"weights from {path}; its {next(iter(dropped.values()))[0]}-class head left out, a new one drawn"
    return f"weights from {path}"


def classifier_name(model: nn.Module) -> str:
    """Where the model's classifier (timm's `get_classifier()`) sits in it, as a submodule path, e.g. "fc"."""
    head = model.get_classifier()
    return next(name for name, module in model.named_modules() if module is head)
