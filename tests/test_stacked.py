"""models.stacked: K ResNet-32s stacked in one module train exactly as the K models do alone, in fp32."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from losses import BalancedSoftmax
from models.resnet_cifar import CifarResNet
from models.stacked import StackedLoss, StackedResNet, stack, unstack

K, BATCH, SIDE, CLASSES = 3, 4, 8, 5
TOL = dict(rtol=1e-4, atol=1e-5)  # fp32; a grouped convolution may sum in another order than K plain ones


def separate_models(k: int = K) -> list[CifarResNet]:
    """K ResNet-32s drawn with different seeds, their BatchNorms' weights, biases and statistics drawn too, so that
    a model's channel read at another model's place (or another channel's) would show."""
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        model = CifarResNet(depth=5, num_classes=CLASSES)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.normal_(0, 0.2)
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 2)
        model.fc.bias.data.normal_(0, 0.2)
        models.append(model)
    return models


def batches(k: int = K, seed: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """K batches one after the other, as StackedResNet takes them, and their targets."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(k * BATCH, 3, SIDE, SIDE, generator=generator)
    return images, torch.randint(0, CLASSES, (k * BATCH,), generator=generator)


def assert_states_close(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], **TOL, msg=key)


@pytest.mark.parametrize("k, channels_last", [(1, False), (K, False), (K, True)])
def test_train_mode_outputs_and_batchnorm_statistics_are_the_separate_models(k, channels_last):
    models = separate_models(k)
    stacked = StackedResNet.from_models(models)
    images, _ = batches(k)
    if channels_last:
        stacked = stacked.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    stacked.train()
    outputs = stacked(images)
    assert outputs.shape == (k * BATCH, CLASSES)
    for model, own, out in zip(models, images.chunk(k), outputs.chunk(k)):
        model.train()
        torch.testing.assert_close(out, model(own), **TOL)
    for state, model in zip(stacked.unstack(), models):  # the running statistics after one forward
        assert_states_close(state, model.state_dict())


def test_the_summed_loss_gives_each_model_its_own_gradients():
    # one loss per model, CE and Balanced Softmax side by side, as a sweep's runs would be stacked
    criteria = [nn.CrossEntropyLoss(), BalancedSoftmax([50, 20, 10, 5, 1]), nn.CrossEntropyLoss()]
    models = separate_models()
    stacked = StackedResNet.from_models(models)
    images, targets = batches()
    StackedLoss(criteria)(stacked(images), targets).backward()
    grads = unstack({name: p.grad for name, p in stacked.named_parameters()}, K)
    for model, criterion, own, own_targets, grad in zip(models, criteria, images.chunk(K), targets.chunk(K), grads):
        criterion(model(own), own_targets).backward()
        assert_states_close(grad, {name: p.grad for name, p in model.named_parameters()})


def test_sgd_steps_on_the_stacked_model_are_the_steps_of_the_separate_models():
    models = separate_models()
    stacked = StackedResNet.from_models(models)
    # the recipes' momentum and weight decay; at their lr of 0.1 these 4-image batches of noise diverge, and a
    # diverging run magnifies fp32 rounding past any tolerance
    sgd = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)
    optimizers = [torch.optim.SGD(model.parameters(), **sgd) for model in models]
    stacked_optimizer = torch.optim.SGD(stacked.parameters(), **sgd)
    loss = StackedLoss([nn.CrossEntropyLoss()] * K)
    for step in range(3):  # the second and third steps carry momentum
        images, targets = batches(seed=step)
        loss(stacked(images), targets).backward()
        stacked_optimizer.step()
        stacked_optimizer.zero_grad()
        for model, optimizer, own, own_targets in zip(models, optimizers, images.chunk(K), targets.chunk(K)):
            F.cross_entropy(model(own), own_targets).backward()
            optimizer.step()
            optimizer.zero_grad()
    for state, model in zip(stacked.unstack(), models):  # weights, BatchNorm statistics and their batch count
        assert_states_close(state, model.state_dict())


def test_eval_mode_outputs_are_the_separate_models():
    models = separate_models()
    stacked = StackedResNet.from_models(models).eval()
    images, _ = batches()
    with torch.no_grad():
        outputs = stacked(images)
        for model, own, out in zip(models, images.chunk(K), outputs.chunk(K)):
            torch.testing.assert_close(out, model.eval()(own), **TOL)


def test_unstack_gives_back_the_models_state_dicts():
    models = separate_models()
    stacked = StackedResNet.from_models(models)
    assert stacked.fc.weight.shape == (K, CLASSES, 64) and stacked.stem[0].groups == K
    for state, model in zip(stacked.unstack(), models):
        want = model.state_dict()
        assert state.keys() == want.keys()
        assert all(torch.equal(state[key], want[key]) for key in want)
        CifarResNet(depth=5, num_classes=CLASSES).load_state_dict(state)  # strict: a checkpoint per model
    assert all(torch.equal(a, b) for a, b in zip(stack(stacked.unstack()).values(), stacked.state_dict().values()))


def test_models_at_different_steps_do_not_stack():
    models = separate_models(2)
    models[1].stem[1].num_batches_tracked += 1
    with pytest.raises(ValueError, match="num_batches_tracked"):
        StackedResNet.from_models(models)


def test_a_fresh_stack_draws_each_model_as_cifar_resnet_does():
    # kaiming_normal_ of one model's weight: std sqrt(2 / fan_in), fan_in that of one model, not of K
    stacked = StackedResNet(8, num_classes=CLASSES)
    torch.testing.assert_close(stacked.fc.weight.std().item(), (2 / 64) ** 0.5, rtol=0.15, atol=0)
    conv = stacked.blocks[-1].conv2.weight  # 8 x 64 out channels, 64 x 9 in each
    torch.testing.assert_close(conv.std().item(), (2 / (64 * 9)) ** 0.5, rtol=0.05, atol=0)


def test_a_fresh_stack_draws_each_head_bias_as_nn_linear_does():
    """Each model's nn.Linear head draws its bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)); a fresh stack is K fresh
    models only if its K biases are drawn alike."""
    bias = StackedResNet(8, num_classes=100).fc.bias
    bound = 1 / 64 ** 0.5
    assert bias.abs().max() <= bound and not torch.equal(bias[0], bias[1])
    torch.testing.assert_close(bias.std().item(), bound / 3 ** 0.5, rtol=0.1, atol=0)  # a uniform's std


def test_the_stack_refuses_fp16_where_one_overflow_would_skip_every_model_step():
    """Under fp16 loss scaling, one model's overflow skips the one optimizer step of all K models, where K separate
    runs would skip one model's: the stack is kept out of fp16, in one line; bf16 and fp32 run."""
    stacked = StackedResNet(2, num_classes=CLASSES)
    images, _ = batches(2)
    with torch.autocast("cpu", dtype=torch.float16), pytest.raises(RuntimeError, match="fp16") as error:
        stacked(images)
    assert "\n" not in str(error.value)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert stacked(images).shape == (2 * BATCH, CLASSES)
