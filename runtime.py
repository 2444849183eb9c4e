"""Run-time choices every entry point makes alike: the precision that runs, and whether accelerate sees a CPU only."""
from __future__ import annotations

from pathlib import Path

import torch


def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX): only then is bf16 autocast faster than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def mixed_precision(requested: str, on_gpu: bool | None = None) -> tuple[str, str]:
    """The precision to run and why. On a CPU accelerate silently runs fp16 as fp32, so fp16 becomes bf16 where
    the CPU has bf16 units (2-3x faster than fp32) and fp32 where it has none (there bf16 is emulated and slower).
    `on_gpu` defaults to whether a GPU is present."""
    if on_gpu is None:
        on_gpu = torch.cuda.is_available()
    if requested != "fp16" or on_gpu:
        return requested, ""
    if cpu_has_bf16_units():
        return "bf16", " (fp16 needs a GPU; this CPU has bf16 units)"
    return "no", " (fp16 needs a GPU, and this CPU lacks bf16 units, where bf16 runs slower than fp32)"


def cpu_only() -> bool:
    """Whether no GPU (or other accelerator) is present. accelerate then needs `cpu=True` to treat a torchrun
    launch as one multi-process CPU (gloo) job; without it every process trains alone as a 1-process run."""
    accelerators = getattr(torch, "accelerator", None)  # torch >= 2.6
    if accelerators is not None:
        return not accelerators.is_available()
    return not (torch.cuda.is_available() or torch.backends.mps.is_available())
