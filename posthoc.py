"""Post-hoc corrections of a trained classifier for a balanced test set, without training: logit adjustment (Menon et
al., "Long-tail learning via logit adjustment", ICLR 2021) and tau-normalisation (Kang et al., "Decoupling
Representation and Classifier for Long-Tailed Recognition", ICLR 2020)."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from errors import ConfigError
from models.heads import NormedLinear
from stage2 import ScaledClassifier

# evaluate.py's option -> the method it runs
POST_HOC = {"logit_adjust": "--logit-adjust", "tau_norm": "--tau-norm"}


def logit_adjust(logits: torch.Tensor, num_per_cls, tau: float) -> torch.Tensor:
    """Logits minus tau x log(training prior): the inference-time twin of Balanced Softmax, which adds it in training."""
    counts = torch.as_tensor(num_per_cls, dtype=torch.float32, device=logits.device)
    return logits - tau * torch.log(counts / counts.sum())


def tau_normalise(weight: torch.Tensor, tau: float) -> torch.Tensor:
    """Each class's weight row divided by its L2 norm to the power tau: tau 1 gives every class a unit-norm row,
    undoing the larger norms that head classes grow in training."""
    return weight / weight.norm(dim=1, keepdim=True) ** tau


class LinearForm(NamedTuple):
    """A classifier head as the linear map it computes: logits = (features, L2-normalised where `normalises`)
    x `weight`.T + `bias`. Its rows are what tau-normalisation divides."""
    normalises: bool
    weight: torch.Tensor
    bias: torch.Tensor | None


def linear_form(head: nn.Module) -> LinearForm:
    """The linear map of one of the run's heads: nn.Linear, NormedLinear (unit rows on unit features), and LWS's
    ScaledClassifier over either (each class's row and bias times its scale). Any other head is refused in one line."""
    scales = None
    if isinstance(head, ScaledClassifier):
        head, scales = head.linear, head.scales
    if isinstance(head, NormedLinear):
        form = LinearForm(True, F.normalize(head.weight, dim=1), None)
    elif isinstance(head, nn.Linear):
        form = LinearForm(False, head.weight, head.bias)
    else:
        raise ConfigError(f"--tau-norm does not know the rows of a {type(head).__name__} classifier: it corrects "
                          "nn.Linear, NormedLinear and LWS's scaled classifier over either")
    if scales is None:
        return form
    return LinearForm(form.normalises, form.weight * scales[:, None], None if form.bias is None else form.bias * scales)


def adjusted_logits(method: str, features: torch.Tensor, head: nn.Module, num_per_cls, tau: float) -> torch.Tensor:
    """The logits of the classifier `head` on `features` (what it receives in the model), corrected by `method` at
    `tau`. Logit adjustment shifts the head's own logits, so its tau 0 gives the model's. Tau-normalisation scores
    with the head's normalised rows alone (its features normalised where the head normalises them) and drops the
    bias, as Kang et al.'s method does (the decoupling code and BALMS's tau_norm.py alike): its tau 0 gives the
    model's logits without the bias. Kept, a head-favouring bias would dominate the shrinking rows as tau grows. On
    a normed head, whose rows are unit already, every tau gives the model's logits; over LWS, tau 1 undoes the
    scales. Called under the model's autocast, the classifier runs at the model's precision, as the model computes
    it."""
    if method == "tau_norm":
        form = linear_form(head)
        inputs = F.normalize(features, dim=1) if form.normalises else features
        return F.linear(inputs, tau_normalise(form.weight.float(), tau))  # under autocast, as the model's classifier
    return logit_adjust(head(features).float(), num_per_cls, tau)


def parse_taus(text: str) -> list[float]:
    """`1` or `0,0.5,1` as a list of numbers (argparse's type for the post-hoc options)."""
    try:
        taus = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of numbers (e.g. 0,0.5,1)") from None
    if len(set(taus)) != len(taus):
        raise ValueError(f"{text!r} lists a tau twice")
    return taus
