"""Training-throughput benchmark: cells/s, tokens/s, achieved FLOP/s against a matmul peak.

The benchmark times full optimiser steps (masking, forward, MSE over masked genes, backward,
gradient clipping, AdamW) on random expression values, so it measures the model and the
training step, not data loading. The peak is this machine's measured throughput of one large
square matrix product in the same precision, sampled between the timed steps so that it sees
their load, so the ratio is a model-FLOPs utilisation (MFU) against what the device actually
sustains, not against a datasheet.

:func:`compare_reference` times the model side by side with a reference build of the same
published architecture from ``torch.nn.TransformerEncoder`` (fp32, eager, dropout 0.1 on
attention weights too), step for step in one process, from the same weights on the same
batches and masks, so that a busy machine slows both alike and the losses can be compared.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

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


# Side of the square matrices whose product measures the peak.
PEAK_MATRIX_SIZE = 2048


class MatmulPeak:
    """FLOP/s of a square matrix product in one dtype, sampled one product at a time.

    Sampled between the timed steps of a benchmark, the peak sees the load the steps see. On
    the shared two-core machine, a peak measured as the best of ten products after the steps
    moved from 411 to 936 GFLOP/s (bf16, one thread, load 2.8-3.0) between runs of the same
    benchmark, which moved the MFU more than the model did.

    Parameters
    ----------
    device
        Where to multiply.
    dtype
        ``"fp32"`` or ``"bf16"``.
    """

    def __init__(self, device: torch.device, dtype: str) -> None:
        torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
        n = PEAK_MATRIX_SIZE
        self.device, self.flops_per_product = device, 2.0 * n**3
        own = torch.Generator(device=device).manual_seed(0)  # leave the steps' streams alone
        self.a = torch.randn(n, n, generator=own, device=device, dtype=torch_dtype)
        self.b = torch.randn(n, n, generator=own, device=device, dtype=torch_dtype)
        (self.a @ self.b).sum().item()  # warm-up
        self.seconds: list[float] = []

    def sample(self) -> None:
        """Time one product."""
        _synchronize(self.device)
        started = time.perf_counter()
        self.a @ self.b
        _synchronize(self.device)
        self.seconds.append(time.perf_counter() - started)

    def flops(self, average: Callable[[list[float]], float] = statistics.fmean) -> float:
        """FLOP/s over the ``average`` time of the sampled products (average the steps' times
        the same way)."""
        return self.flops_per_product / average(self.seconds)


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
    """Time ``steps`` optimiser steps after ``warmup_steps`` untimed ones, and after each timed
    step one matrix product of :class:`MatmulPeak` (untimed as a step), the peak of the MFU.

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
    peak_meter = MatmulPeak(torch_device, chosen_dtype)
    seconds = []
    for step in range(warmup_steps + steps):
        mask = torch.rand(values.shape, device=torch_device) < config.mask_rate
        _synchronize(torch_device)
        started = time.perf_counter()
        optimiser_step(model, optimizer, values, mask, config.lr, config, chosen_dtype)
        _synchronize(torch_device)
        if step >= warmup_steps:
            seconds.append(time.perf_counter() - started)
            peak_meter.sample()
    per_step = statistics.fmean(seconds)
    cells_per_s = batch_size / per_step
    flops_per_cell = model.training_flops_per_cell()
    peak = peak_meter.flops()
    return BenchResult(
        size=size.name, n_genes=n_genes, batch_size=batch_size, params=model.num_parameters(),
        device=str(torch_device), dtype=chosen_dtype, threads=torch.get_num_threads(),
        steps_timed=steps, seconds_per_step=per_step, cells_per_s=cells_per_s,
        tokens_per_s=cells_per_s * n_genes, flops_per_cell=flops_per_cell,
        achieved_flops=cells_per_s * flops_per_cell, peak_matmul_flops=peak,
        mfu=cells_per_s * flops_per_cell / peak,
    )


class ReferenceTransformer(nn.Module):
    """The published architecture built from ``torch.nn.TransformerEncoder``, for comparison.

    Gene embedding, value projection, mask vector and head as in
    :class:`~scalelib.model.MaskedExpressionTransformer`; the blocks are pre-LayerNorm
    ``nn.TransformerEncoderLayer`` s with GELU and the same dropout on attention weights, the
    feed-forward hidden layer and both residual branches. Built from a model, it starts from
    that model's weights.

    Parameters
    ----------
    model
        The model whose shape and weights to copy.
    dropout
        Dropout everywhere, attention weights included.
    """

    def __init__(self, model: MaskedExpressionTransformer, dropout: float = 0.1) -> None:
        super().__init__()
        size = model.size
        self.gene_embedding = copy.deepcopy(model.gene_embedding)
        self.value_projection = copy.deepcopy(model.value_projection)
        self.mask_embedding = copy.deepcopy(model.mask_embedding)
        self.head = copy.deepcopy(model.head)
        layer = nn.TransformerEncoderLayer(
            size.d_model, size.n_heads, size.ff_mult * size.d_model, dropout, "gelu",
            batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, size.n_layers, enable_nested_tensor=False)
        for reference, block in zip(self.encoder.layers, model.blocks, strict=True):
            copy_block_weights(block, reference)

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predict one value per gene, shape ``(batch, n_genes)``."""
        visible = values.masked_fill(mask, 0.0).unsqueeze(-1)
        value_tokens = torch.where(mask.unsqueeze(-1), self.mask_embedding,
                                   self.value_projection(visible))
        hidden = self.encoder(self.gene_embedding.weight + value_tokens)
        return self.head(hidden).squeeze(-1)


def copy_block_weights(block: nn.Module, reference: nn.TransformerEncoderLayer) -> None:
    """Copy an :class:`~scalelib.model.EncoderBlock`'s weights into the equivalent pre-LayerNorm
    ``nn.TransformerEncoderLayer`` (fused query/key/value projection, output projection, both
    norms, both feed-forward layers).

    Parameters
    ----------
    block
        The block to copy from.
    reference
        The layer to copy into, of the block's shape.
    """
    with torch.no_grad():
        reference.self_attn.in_proj_weight.copy_(block.qkv.weight)
        reference.self_attn.in_proj_bias.copy_(block.qkv.bias)
        reference.self_attn.out_proj.load_state_dict(block.attn_out.state_dict())
        reference.norm1.load_state_dict(block.attn_norm.state_dict())
        reference.norm2.load_state_dict(block.ff_norm.state_dict())
        reference.linear1.load_state_dict(block.ff_in.state_dict())
        reference.linear2.load_state_dict(block.ff_out.state_dict())


@dataclass(frozen=True)
class Comparison:
    """Side-by-side figures of the model and the reference build."""

    size: str
    n_genes: int
    batch_size: int
    dtype: str
    attention_dropout: float
    threads: int
    steps_timed: int
    seconds_per_step: float
    reference_seconds_per_step: float
    speedup: float
    mfu: float
    peak_matmul_flops: float
    final_loss: float
    reference_final_loss: float
    loss_noise: float

    def to_dict(self) -> dict:
        """The figures as a plain dictionary."""
        return asdict(self)


def compare_reference(
    size: ModelSize,
    n_genes: int,
    batch_size: int,
    *,
    steps: int = 20,
    warmup_steps: int = 2,
    dtype: str = "auto",
    attention_dropout: float | None = None,
    loss_window: int = 10,
    seed: int = 0,
) -> Comparison:
    """Time the model and :class:`ReferenceTransformer` step for step on a CPU.

    Both start from the same weights and take the same optimiser steps on the same random
    batches and masks; steps alternate between the two (which goes first alternates too).

    Parameters
    ----------
    size, n_genes, batch_size
        Model shape, vocabulary size V and cells per step.
    steps, warmup_steps
        Timed and untimed steps of each model.
    dtype
        Precision of the model (``auto`` resolves as in training); the reference runs in fp32.
    attention_dropout
        Attention-weight dropout of the model (None: as dropout, 0.1); the reference keeps 0.1.
    loss_window
        The final loss of each is the mean over this many last steps.
    seed
        Seed of the weights, batches and masks.

    Returns
    -------
    Comparison
        Seconds per step of each (medians), ``speedup`` (the median of the per-step ratios
        reference / model), the model's MFU, the final losses and ``loss_noise``: the standard
        error of their difference, from the spread of the paired differences over the last
        ``loss_window`` steps (both see the same batches, so only dropout and the path the
        weights took differ).
    """
    config = TrainConfig(max_steps=warmup_steps + steps, batch_size=batch_size, dtype=dtype,
                         device="cpu")
    device = torch.device("cpu")
    chosen_dtype = resolve_dtype(dtype, device, size)
    torch.manual_seed(seed)
    model = MaskedExpressionTransformer(size, n_genes, attention_dropout=attention_dropout).train()
    reference = ReferenceTransformer(model).train()
    runs = [(model, make_optimizer(model, config, device), chosen_dtype),
            (reference, make_optimizer(reference, config, device), "fp32")]
    generator = torch.Generator().manual_seed(seed)
    peak_meter = MatmulPeak(device, chosen_dtype)
    seconds: list[list[float]] = [[], []]
    losses: list[list[float]] = [[], []]
    for step in range(warmup_steps + steps):
        values = torch.rand(batch_size, n_genes, generator=generator) * 4.0
        mask = torch.rand(values.shape, generator=generator) < config.mask_rate
        for which in ((0, 1) if step % 2 else (1, 0)):
            net, optimizer, run_dtype = runs[which]
            started = time.perf_counter()
            loss = optimiser_step(net, optimizer, values, mask, config.lr, config, run_dtype)
            if step >= warmup_steps:
                seconds[which].append(time.perf_counter() - started)
            losses[which].append(loss)
        if step >= warmup_steps:
            peak_meter.sample()
    ratios = [ref / ours for ours, ref in zip(*seconds, strict=True)]
    ours, ref = (statistics.median(times) for times in seconds)
    last = [values[-loss_window:] for values in losses]
    differences = [a - b for a, b in zip(*last, strict=True)]
    noise = (statistics.variance(differences) / len(differences)) ** 0.5
    peak = peak_meter.flops(statistics.median)
    return Comparison(
        size=size.name, n_genes=n_genes, batch_size=batch_size, dtype=chosen_dtype,
        attention_dropout=model.blocks[0].attention_dropout, threads=torch.get_num_threads(),
        steps_timed=steps,
        seconds_per_step=ours, reference_seconds_per_step=ref,
        speedup=statistics.median(ratios),
        mfu=batch_size * model.training_flops_per_cell() / ours / peak, peak_matmul_flops=peak,
        final_loss=statistics.fmean(last[0]), reference_final_loss=statistics.fmean(last[1]),
        loss_noise=noise,
    )
