"""Hardware policy: which device a run uses and in which precision it multiplies matrices.

Used by training, sweeps and the throughput benchmark. Only :func:`resolve_device` and
:func:`resolve_dtype` look at the machine; a sweep calls them when it is about to train, never
while it plans.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from scalelib.config import ModelSize
from scalelib.errors import ScalelibError

# On a CPU, bf16 autocast pays for its casts only once matrix products dominate: measured with
# `scalelib bench` on two AVX512-BF16 cores, bf16 was 15% slower than fp32 at d_model=64
# (V=128, batch 64), 30% faster at d_model=128 (S, V=512) and 2.5x faster at d_model=512 (M).
CPU_BF16_MIN_WIDTH = 128


def resolve_device(name: str = "auto") -> torch.device:
    """Pick ``cuda``, then ``mps``, then ``cpu`` for ``"auto"``; otherwise check ``name`` exists."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ScalelibError(f"unknown device {name!r}; use auto, cpu, cuda or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ScalelibError("CUDA was asked for but torch sees no GPU; use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ScalelibError("MPS was asked for but is not available; use --device cpu or auto")
    return device


def resolve_dtype(name: str, device: torch.device, size: ModelSize) -> str:
    """Choose ``"fp32"`` or ``"bf16"`` autocast for ``"auto"``; check an explicit choice.

    Parameters
    ----------
    name
        ``"auto"``, ``"fp32"`` or ``"bf16"``. Only ``"auto"`` and ``"bf16"`` look at the
        hardware (``"fp32"`` runs everywhere).
    device
        Where the model trains.
    size
        Model shape: on a CPU, auto picks bf16 only from ``CPU_BF16_MIN_WIDTH``.

    Returns
    -------
    str
        ``"fp32"`` or ``"bf16"``.
    """
    if name == "fp32":
        return name
    bf16_ok = bf16_supported(device)
    if name == "bf16" and not bf16_ok:
        raise ScalelibError(f"bf16 is not supported on {device}; use --dtype fp32 or auto")
    if name == "bf16":
        return name
    if device.type == "cuda":
        return "bf16" if bf16_ok else "fp32"
    if device.type == "cpu" and bf16_ok and size.d_model >= CPU_BF16_MIN_WIDTH:
        return "bf16"
    return "fp32"


def bf16_supported(device: torch.device) -> bool:
    """True when ``device`` multiplies bf16 natively (emulated bf16 counts as unsupported)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return _cpu_has_bf16_instructions()
    return False


@functools.cache
def _cpu_has_bf16_instructions() -> bool:
    """True when the CPU multiplies bf16 natively (AVX512-BF16 or AMX-BF16); elsewhere
    PyTorch emulates bf16 and autocast only slows training down."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():  # Linux lists the instruction sets; torch's capability string does not
        flags = set(cpuinfo.read_text().split())
        return bool({"avx512_bf16", "amx_bf16"} & flags)
    return torch.backends.cpu.get_cpu_capability() == "AMX"


def autocast(device: torch.device, dtype: str) -> torch.autocast:
    """The autocast context of a forward pass: bf16 when ``dtype`` is ``"bf16"``, else off."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
