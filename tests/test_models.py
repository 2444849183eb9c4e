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


def test_another_timm_model_on_32x32_images_keeps_its_imagenet_stem_and_says_so():
    _, note = build_model("mobilenetv3_small_050", 10, False, 32)
    assert "mobilenetv3_small_050: ImageNet stem kept on 32x32 images (stride 32: 1x1 maps" in note
    assert "ImageNet stem" not in build_model("resnet32", 10, False, 32)[1]  # made for CIFAR
    assert "ImageNet stem" not in build_model("mobilenetv3_small_050", 10, False, 224)[1]


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


def test_resnet10_is_the_decoupling_papers_one_basic_block_a_stage():
    model, note = build_model("resnet10", 1000, False, 224)
    assert note == ""
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    assert model.conv1.kernel_size == (7, 7) and isinstance(model.maxpool, nn.MaxPool2d)
    assert _params(model) == 5_418_792  # resnet18's 11.7 M less one basic block a stage
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


@pytest.mark.parametrize("name", ["resnet50", "resnext50_32x4d", "resnet152"])
def test_the_large_benchmarks_backbones_come_from_timm(name):
    model, _ = build_model(name, 365, False, 224)
    assert model.get_classifier().out_features == 365 and model.get_classifier().in_features == 2048


def _weights_file(path, name="resnet10", num_classes=1000, wrap=None):
    torch.manual_seed(1)
    source = timm.create_model(name, num_classes=num_classes)
    state = source.state_dict()
    if wrap:  # as a DDP training script saves it
        state = {wrap: {f"module.{k}": v for k, v in state.items()}}
    torch.save(state, path)
    return source


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_pretrained_file_loads_every_weight_but_a_head_of_another_class_count(tmp_path, wrap):
    source = _weights_file(tmp_path / "w.pth", wrap=wrap)
    torch.manual_seed(2)
    model, note = build_model("resnet10", 7, True, 224, pretrained_file=str(tmp_path / "w.pth"))
    own, theirs = model.state_dict(), source.state_dict()
    assert all(torch.equal(own[k], theirs[k]) for k in own if not k.startswith("fc."))
    assert model.fc.weight.shape == (7, 512) and not torch.equal(model.fc.weight, theirs["fc.weight"][:7])
    assert "1000-class head left out" in note


def test_pretrained_file_with_the_same_class_count_loads_the_head_too(tmp_path):
    source = _weights_file(tmp_path / "w.pth", num_classes=5)
    model, note = build_model("resnet10", 5, True, 224, pretrained_file=str(tmp_path / "w.pth"))
    assert torch.equal(model.fc.weight, source.fc.weight) and "head" not in note


def test_pretrained_file_on_small_images_keeps_the_body_and_replaces_the_stem(tmp_path):
    source = _weights_file(tmp_path / "w.pth")
    model, note = build_model("resnet10", 10, True, 32, pretrained_file=str(tmp_path / "w.pth"))
    assert model.conv1.kernel_size == (3, 3) and torch.equal(model.layer4[0].conv2.weight,
                                                               source.layer4[0].conv2.weight)
    assert "first convolution was replaced" in note


def test_a_missing_or_mismatched_or_unreadable_weights_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="does not exist") as info:
        build_model("resnet10", 10, True, 224, pretrained_file=str(tmp_path / "none.pth"))
    _weights_file(tmp_path / "r18.pth", name="resnet18")
    with pytest.raises(ConfigError) as mismatched:
        build_model("resnet10", 10, True, 224, pretrained_file=str(tmp_path / "r18.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError) as junk:
        build_model("resnet10", 10, True, 224, pretrained_file=str(tmp_path / "junk.pth"))
    for error in (info, mismatched, junk):
        assert "MODEL.pretrained_file" in str(error.value) and "\n" not in str(error.value)
    assert "r18.pth does not fit ResNet" in str(mismatched.value) and "layer1.1." in str(mismatched.value)


# ---------------------------------------------------------------- MODEL.classifier normed (LDAM-DRW's NormedLinear)

@pytest.mark.parametrize("name", ["resnet32", "resnet18"])
def test_normed_head_gives_the_cosines_of_features_and_class_weights(name):
    from models import NormedLinear

    model, note = build_model(name, 10, False, 32, classifier="normed")
    head = model.get_classifier()
    assert isinstance(head, NormedLinear) and "normalised linear head" in note
    assert [n for n, _ in head.named_parameters()] == ["weight"]  # no bias
    # LDAM-DRW's init: uniform in [-1, 1], then every class's weight of norm 1
    torch.testing.assert_close(head.weight.norm(dim=1), torch.ones(10))
    features = torch.randn(6, head.in_features, generator=torch.Generator().manual_seed(0)) * 5
    # cos(x, w_j) = x . w_j / (|x| |w_j|), written out
    expected = torch.stack([torch.stack([x @ w / (x.norm() * w.norm()) for w in head.weight]) for x in features])
    torch.testing.assert_close(head(features), expected, rtol=1e-5, atol=1e-6)
    logits = model.eval()(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and bool((logits.abs() <= 1 + 1e-6).all())


def test_normed_head_keeps_the_linear_one_by_default():
    model, _ = build_model("resnet32", 10, False, 32)
    assert type(model.get_classifier()) is torch.nn.Linear
