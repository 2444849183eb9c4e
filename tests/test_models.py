"""models.build_model: timm models, the CIFAR stem, and the registered CIFAR ResNet-32."""
from __future__ import annotations

import math

import pytest
import timm
import torch
from torch import nn

import models  # noqa: F401  registers resnet32 with timm
from errors import ConfigError
from models import build_model


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _resnet32_params(num_classes: int) -> int:
    """He et al. 2016, CIFAR ResNet-32 with option A (parameter-free) shortcuts, counted by hand:
    a 3x3 stem conv to 16 channels, 3 stages x 5 basic blocks (two 3x3 convs, two BatchNorms) at 16/32/64
    channels, and a 64 -> num_classes linear head."""
    conv = lambda cin, cout: 9 * cin * cout  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731
    total = conv(3, 16) + bn(16)
    cin = 16
    for width in (16, 32, 64):
        for _ in range(5):
            total += conv(cin, width) + bn(width) + conv(width, width) + bn(width)
            cin = width
    return total + 64 * num_classes + num_classes


def test_resnet32_parameter_count_and_output():
    assert _resnet32_params(10) == 464_154
    model, _ = build_model("resnet32", 10, False, 32)
    assert _params(model) == 464_154  # He et al. 2016, Table 6: ResNet-32 has 0.46 M
    assert _params(build_model("resnet32", 100, False, 32)[0]) == _resnet32_params(100)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_resnet32_trains_in_channels_last():
    model, _ = build_model("resnet32", 10, False, 32)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_timm_knows_resnet32_once_models_is_imported():
    assert timm.is_model("resnet32")
    model = timm.create_model("resnet32", num_classes=7)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_resnet32_has_no_pretrained_weights_and_says_so_as_a_config_error():
    with pytest.raises(ConfigError) as info:
        build_model("resnet32", 10, True, 32)
    assert "MODEL.pretrained" in str(info.value) and "\n" not in str(info.value)


def test_resnet18_gets_the_cifar_stem_on_32x32_images():
    model, note = build_model("resnet18", 10, False, 32)
    assert isinstance(model.conv1, nn.Conv2d)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and model.conv1.padding == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert "CIFAR stem" in note
    model.eval()
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32)
        features = model.forward_features(x)
        out = model(x)
    # 32 -> 32 (stem) -> 32, 16, 8, 4 (stages): the last stage's map is 4x4
    assert features.shape == (2, 512, 4, 4)
    assert out.shape == (2, 10)


def test_resnet18_keeps_the_imagenet_stem_on_large_images():
    model, note = build_model("resnet18", 10, False, 224)
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert isinstance(model.maxpool, nn.MaxPool2d)
    assert note == ""


@pytest.mark.parametrize("name", ["resnet32", "resnet18"])
def test_classifier_init_pytorch_draws_the_head_as_nn_linear_does(name):
    """nn.Linear's default init is uniform within 1/sqrt(fan_in); resnet32's own (LDAM-DRW's kaiming normal) is
    not bounded so, and is what MODEL.classifier_init model keeps."""
    torch.manual_seed(0)
    own, _ = build_model(name, 10, False, 32)
    torch.manual_seed(0)
    default, _ = build_model(name, 10, False, 32, classifier_init="pytorch")
    weight = default.get_classifier().weight
    bound = 1 / math.sqrt(weight.shape[1])
    assert weight.abs().max() <= bound and weight.abs().max() > 0.9 * bound
    assert default.get_classifier().bias.abs().max() <= bound
    if name == "resnet32":
        assert own.get_classifier().weight.abs().max() > 1.5 * bound
    body = [p for n, p in default.named_parameters() if not n.startswith(("fc.", "head."))]
    assert all(torch.equal(a, b) for a, b in zip(body, [p for n, p in own.named_parameters()
                                                        if not n.startswith(("fc.", "head."))]))
