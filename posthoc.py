"""Post-hoc corrections of a trained classifier for a balanced test set, without training: logit adjustment (Menon et
al., "Long-tail learning via logit adjustment", ICLR 2021) and tau-normalisation (Kang et al., "Decoupling
Representation and Classifier for Long-Tailed Recognition", ICLR 2020)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

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


def adjusted_logits(method: str, features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    num_per_cls, tau: float) -> torch.Tensor:
    """The logits of a linear classifier (`weight`, `bias`) on `features`, corrected by `method` at `tau`.
    Logit adjustment shifts the plain logits, so its tau 0 gives them. Tau-normalisation scores with the normalised
    weight rows alone and drops the bias, as Kang et al.'s method does (the decoupling code and BALMS's tau_norm.py
    alike): its tau 0 gives the logits without the bias. Kept, a head-favouring bias would dominate the shrinking
    rows as tau grows. Called under the model's autocast, the classifier runs at the model's precision, as the
    model computes it."""
    if method == "tau_norm":
        return F.linear(features, tau_normalise(weight.float(), tau))  # under autocast, as the model's classifier
    return logit_adjust(F.linear(features, weight, bias).float(), num_per_cls, tau)


def parse_taus(text: str) -> list[float]:
    """`1` or `0,0.5,1` as a list of numbers (argparse's type for the post-hoc options)."""
    try:
        taus = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of numbers (e.g. 0,0.5,1)") from None
    if len(set(taus)) != len(taus):
        raise ValueError(f"{text!r} lists a tau twice")
    return taus
