"""Training-throughput benchmark: cells/s, tokens/s, achieved FLOP/s against a matmul peak.

The benchmark times full optimiser steps (masking, forward, MSE over masked genes, backward,
gradient clipping, AdamW) on random expression values, so it measures the model and the
training step, not data loading. The peak is this machine's measured throughput of one large
square matrix product in the same precision, so the ratio is a model-FLOPs utilisation (MFU)
against what the device actually sustains, not against a datasheet.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from scalelib.config import ModelSize, TrainConfig
from scalelib.hardware import resolve_device, resolve_dtype
from scalelib.model import MaskedExpressionTransformer
from scalelib.train import make_optimizer, optimiser_step


@dataclass(frozen=True)
class BenchResult:
    """Throughput figures of one benchmark."""

    size: str
    n_genes: int
    batch_size: int
    params: int
    device: str
    dtype: str
    threads: int
    steps_timed: int
    seconds_per_step: float
    cells_per_s: float
    tokens_per_s: float
    flops_per_cell: float
    achieved_flops: float
    peak_matmul_flops: float
    mfu: float

    def to_dict(self) -> dict:
        """The figures as a plain dictionary."""
        return asdict(self)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_peak(device: torch.device, dtype: str, n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of an ``n x n`` by ``n x n`` matrix product in ``dtype`` (best of ``repeats``)."""
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    a = torch.randn(n, n, device=device, dtype=torch_dtype)
    b = torch.randn(n, n, device=device, dtype=torch_dtype)
    (a @ b).sum().item()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        _synchronize(device)
        started = time.perf_counter()
        a @ b
        _synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2.0 * n**3 / best


def benchmark_training(
    size: ModelSize,
    n_genes: int,
    batch_size: int,
    *,
    steps: int = 20,
    warmup_steps: int = 3,
    dtype: str = "auto",
    device: str = "auto",
    attention_dropout: float | None = None,
    seed: int = 0,
) -> BenchResult:
    """Time ``steps`` optimiser steps after ``warmup_steps`` untimed ones.

    Parameters
    ----------
    size
        Model shape.
    n_genes
        Vocabulary size V (tokens per cell).
    batch_size
        Cells per step.
    steps, warmup_steps
        Timed and untimed steps.
    dtype, device, attention_dropout
        As in :class:`~scalelib.config.TrainConfig` (``auto`` resolves the same way).
    seed
        Seed of the weights and the random inputs.
    """
    config = TrainConfig(max_steps=warmup_steps + steps, batch_size=batch_size, dtype=dtype,
                         device=device)
    torch_device = resolve_device(device)
    chosen_dtype = resolve_dtype(dtype, torch_device, size)
    torch.manual_seed(seed)
    model = MaskedExpressionTransformer(size, n_genes, attention_dropout=attention_dropout)
    model = model.to(torch_device).train()
    optimizer = make_optimizer(model, config, torch_device)
    values = torch.rand(batch_size, n_genes, device=torch_device) * 4.0
    for step in range(warmup_steps + steps):
        if step == warmup_steps:
            _synchronize(torch_device)
            started = time.perf_counter()
        mask = torch.rand(values.shape, device=torch_device) < config.mask_rate
        optimiser_step(model, optimizer, values, mask, config.lr, config, chosen_dtype)
    _synchronize(torch_device)
    per_step = (time.perf_counter() - started) / steps
    cells_per_s = batch_size / per_step
    flops_per_cell = model.training_flops_per_cell()
    peak = measure_matmul_peak(torch_device, chosen_dtype)
    return BenchResult(
        size=size.name, n_genes=n_genes, batch_size=batch_size, params=model.num_parameters(),
        device=str(torch_device), dtype=chosen_dtype, threads=torch.get_num_threads(),
        steps_timed=steps, seconds_per_step=per_step, cells_per_s=cells_per_s,
        tokens_per_s=cells_per_s * n_genes, flops_per_cell=flops_per_cell,
        achieved_flops=cells_per_s * flops_per_cell, peak_matmul_flops=peak,
        mfu=cells_per_s * flops_per_cell / peak,
    )
