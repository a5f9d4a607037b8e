"""One training run: (dataset, size, seed, budget) -> best-validation checkpoint and metrics.

:func:`train` reads top to bottom (set-up, loop, finish), with the pieces it uses defined above
it: draw a batch of training cells, mask 15% of their genes afresh, predict the masked values,
take an AdamW step on the objective over masked positions (the MSE, or a likelihood of
:mod:`scalelib.objectives`), and every ``eval_every`` steps score the validation set on its
fixed mask, keeping the best weights. At the end the best weights are scored on the test set
and saved, with the validation error of each gene (``pergene.parquet``). Device and precision
come from :mod:`scalelib.hardware`. With an output directory the run's whole state is saved after
each evaluation and a killed run resumes from there (:mod:`scalelib.resume`).

Validation and test scores are exact: the squared errors (and for likelihood objectives the
NLLs) of every masked position of the split are summed per gene and divided by the number of
masked positions (not a mean of batch means), under a mask drawn once from ``eval_mask_seed``
and shared by every run. Likelihood objectives choose the best checkpoint on validation bits
per masked gene; every objective records the MSE of its prediction on the normalised scale.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from scalelib.config import ModelSize, TrainConfig
from scalelib.convergence import (
    Plateau,
    doubling_schedule,
    left_mean_predictor,
    plateaued,
    relative_gain,
)
from scalelib.data.store import ExpressionDataset, RowsOnDisk, read_rows
from scalelib.distributed import SINGLE_PROCESS, ProcessGroup, current
from scalelib.errors import ScalelibError
from scalelib.hardware import autocast, resolve_device, resolve_dtype
from scalelib.heldout import FixedMask, fixed_mask, gene_means, masked_mse_of_means
from scalelib.model import MaskedExpressionTransformer
from scalelib.objectives import (
    GENE_OUTPUTS,
    HEAD_OUTPUTS,
    Targets,
    nll_nats,
    point_prediction,
    training_loss,
    uses_counts,
)
from scalelib.resume import ResumeFile, run_identity


@dataclass(frozen=True)
class StepInfo:
    """What the ``on_step`` callback receives after every optimiser step."""

    step: int
    total_steps: int
    cells_seen: int
    train_loss: float
    lr: float
    val_mse: float | None
    best_val_mse: float | None
    elapsed_s: float
    val_bits: float | None = None
    cooldown: int = 0  # k during the converge mode's k-th cool-down (the curve's column)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of one run. ``curve`` has one row per optimiser step (see :func:`train`)."""

    params: int
    flops_per_cell: float
    steps: int
    budget_steps: int
    cells_seen: int
    tokens_seen: int
    masked_tokens_seen: int
    best_step: int
    best_val_mse: float
    test_mse: float
    objective: str
    best_val_bits: float | None
    test_bits: float | None
    baseline_val_mse: float
    baseline_test_mse: float
    final_train_loss: float
    stopped_early: bool
    converged: bool
    val_improvement: float
    wall_time_s: float
    device: str
    dtype: str
    world_size: int
    checkpoint: str | None
    curve: pl.DataFrame

    def metrics(self) -> dict:
        """All scalar fields as a dictionary (the curve left out)."""
        out = asdict(self)
        out.pop("curve")
        return out


class TrainingDiverged(RuntimeError):
    """The validation MSE was not finite before any finite evaluation (a sweep records the run
    as failed and goes on)."""


CURVE_SCHEMA = {"step": pl.Int64, "cells_seen": pl.Int64, "train_loss": pl.Float64,
                "val_mse": pl.Float64, "lr": pl.Float64, "elapsed_s": pl.Float64,
                "val_bits": pl.Float64, "cooldown": pl.Int64}


@dataclass(frozen=True)
class Scores:
    """Per-gene sums over the masked positions of a split, and the split's scores from them.

    Parameters
    ----------
    squared_error
        Sum of squared errors of the normalised-scale prediction, per gene (float64).
    nll_nats
        Sum of negative log-likelihoods in nats, per gene (None for the MSE objective).
    masked
        Masked positions per gene.
    """

    squared_error: np.ndarray
    nll_nats: np.ndarray | None
    masked: np.ndarray

    @property
    def mse(self) -> float:
        """Mean squared error over every masked position."""
        return float(self.squared_error.sum() / self.masked.sum())

    @property
    def bits(self) -> float | None:
        """Mean NLL per masked gene in bits (None for the MSE objective)."""
        if self.nll_nats is None:
            return None
        return float(self.nll_nats.sum() / self.masked.sum() / math.log(2))

    def per_gene(self, genes: list[str]) -> pl.DataFrame:
        """One row per gene: gene, masked positions, summed and mean squared error, and for
        likelihood objectives summed NLL (nats) and mean bits per masked position."""
        count = np.maximum(self.masked, 1)
        table = pl.DataFrame({"gene": genes, "n_masked": self.masked.astype(np.int64),
                              "squared_error_sum": self.squared_error,
                              "mse": np.where(self.masked > 0, self.squared_error / count, np.nan)})
        if self.nll_nats is not None:
            table = table.with_columns(
                nll_nats_sum=pl.Series(self.nll_nats),
                bits=pl.Series(np.where(self.masked > 0, self.nll_nats / count / math.log(2),
                                        np.nan)))
        return table


@torch.no_grad()
def evaluate(
    model: MaskedExpressionTransformer,
    values: np.ndarray,
    mask: np.ndarray,
    /,
    *,
    batch_size: int,
    device: torch.device,
    dtype: str,
    objective: str = "mse",
    counts: np.ndarray | RowsOnDisk | None = None,
    target_sum: float | None = None,
    group: ProcessGroup = SINGLE_PROCESS,
) -> Scores:
    """Exact per-gene sums of squared errors (and NLLs) over every masked position of ``values``.

    Parameters
    ----------
    model
        The model; put in eval mode for the pass and restored afterwards.
    values
        Cells to score (cells x genes), in memory or memory-mapped.
    mask
        Boolean mask of ``values``' shape (see :func:`fixed_mask`).
    batch_size
        Cells per forward pass (does not change the result).
    device, dtype
        Where and in which precision to run the forward passes.
    objective
        The model's objective (see :mod:`scalelib.objectives`).
    counts, target_sum
        Raw counts of the cells and the normalisation total (the ``nb`` objective only).
    group
        Data-parallel processes: each scores its shard of the cells and the sums are added.
    """
    was_training = model.training
    model.eval()
    n_genes = values.shape[1]
    squared, nll, masked = np.zeros(n_genes), np.zeros(n_genes), np.zeros(n_genes, dtype=np.int64)
    shard = group.shard(len(values))
    for start in range(shard.start, shard.stop, batch_size):
        stop = min(start + batch_size, shard.stop)
        batch = torch.from_numpy(np.asarray(values[start:stop])).to(device)
        batch_mask = torch.from_numpy(mask[start:stop]).to(device)
        batch_counts = (None if counts is None
                        else torch.from_numpy(np.asarray(counts[start:stop])).to(device))
        targets = Targets(batch, batch_counts, target_sum)
        with autocast(device, dtype):
            outputs = model(batch, batch_mask)
        genes = batch_mask.nonzero()[:, 1]
        errors = point_prediction(objective, outputs, targets, batch_mask) - batch.float()[batch_mask]
        squared += _gene_sums(errors.double().square(), genes, n_genes)
        if objective != "mse":
            nll += _gene_sums(nll_nats(objective, outputs, targets)[batch_mask].double(), genes,
                              n_genes)
        masked += _gene_sums(torch.ones_like(genes, dtype=torch.float64), genes,
                             n_genes).astype(np.int64)
    model.train(was_training)
    squared, nll = (np.asarray(group.sum(*totals)) for totals in (squared, nll))
    masked = np.asarray(group.sum(*masked), dtype=np.int64)
    return Scores(squared, None if objective == "mse" else nll, masked)


def _gene_sums(per_position: torch.Tensor, genes: torch.Tensor, n_genes: int) -> np.ndarray:
    """Sum of values at masked positions per gene index (float64 numpy)."""
    sums = torch.zeros(n_genes, dtype=torch.float64, device=per_position.device)
    return sums.index_add_(0, genes, per_position).cpu().numpy()


def learning_rate(step: int, config: TrainConfig, peak: float | None = None,
                  cooldown: tuple[int, int] | None = None) -> float:
    """Learning rate at optimiser step ``step``: linear warm-up, then cosine decay or flat.

    In the ``converge`` budget mode the rate stays flat after the warm-up except during a
    cool-down ``(start, end)``, over which it falls linearly to ``min_lr_ratio * peak``.

    Parameters
    ----------
    step
        Optimiser step, 0-based.
    config
        Schedule, warm-up fraction, budget and ``min_lr_ratio``.
    peak
        Peak rate (default ``config.lr``); pass ``config.peak_lr(d_model)`` for width scaling.
    cooldown
        0-based first and end step of the ``converge`` mode's running cool-down (None: none).
    """
    peak = config.lr if peak is None else peak
    total = config.total_steps
    warmup = max(1, round(config.warmup_frac * total))
    floor = config.min_lr_ratio * peak
    if step < warmup:
        return peak * (step + 1) / warmup
    if config.budget_mode == "converge":
        if cooldown is None or step < cooldown[0]:
            return peak
        start, end = cooldown
        return peak + (floor - peak) * min(1.0, (step - start + 1) / max(1, end - start))
    if config.schedule == "constant":
        return peak
    progress = (step - warmup) / max(1, total - warmup)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


class Convergence:
    """The validation scores of a fixed-budget run or, in the ``converge`` budget mode, its
    cool-downs.

    In that mode (see :mod:`scalelib.convergence`) cool-downs of ``cooldown_frac`` times the
    stable run's steps branch off at the steps of :func:`~scalelib.convergence.doubling_schedule`
    (evaluated there whatever ``eval_every``), and the run ends with the cool-down that improves
    on the previous one by less than ``converge_tol``, or with the last one scheduled
    (labelled not converged). A cool-down that does not end the run is put aside (the
    training loop restores the stable run's weights and optimiser state). Steps count every
    optimiser step taken, put-aside cool-downs included.
    """

    def __init__(self, config: TrainConfig, mean_predictor_mse: float | None = None) -> None:
        self.config = config
        self.mean_predictor_mse = mean_predictor_mse
        self.scores: list[float] = []  # a fixed-budget run's validation scores (the rule's)
        self.cooldown: tuple[int, int] | None = None  # the running one: (branch step, end step)
        self.cooldowns: list[tuple[int, float]] = []  # finished: (stable steps at branch, score)
        self.set_aside = 0  # optimiser steps of the cool-downs put aside
        self.doubling_gains: list[float] = []  # of each whole cool-down at twice the steps
        self.plateau: Plateau | None = None  # the verdict of the cool-down that ended the run
        self.ended = False
        self.converge_mode = config.budget_mode == "converge"
        self.warmup = max(1, round(config.warmup_frac * config.total_steps))
        self.branch_points = doubling_schedule(config.total_steps, self.warmup,
                                               config.cooldown_frac)

    def evaluates(self, step: int) -> bool:
        """Whether 1-based ``step`` ends with a validation pass: every ``eval_every`` steps
        of the stable run, at the end of a cool-down and at the budget's last step."""
        if step == self.config.total_steps:
            return True
        if self.cooldown is not None:
            return step == self.cooldown[1]
        return step % self.config.eval_every == 0 or self._due(step)

    def _due(self, step: int) -> bool:
        """Whether a scheduled cool-down branches off at this step of the stable run."""
        scheduled = len(self.cooldowns) < len(self.branch_points)
        return (self.converge_mode and scheduled and step > self.warmup
                and step - self.set_aside >= self.branch_points[len(self.cooldowns)])

    def cooldown_number(self, step: int) -> int:
        """0 for a step of the warm-up or the stable run; k for a step of the k-th cool-down."""
        if self.cooldown is not None and step > self.cooldown[0]:
            return len(self.cooldowns) + 1
        return 0

    def record(self, step: int, val_score: float, best_mse: float) -> str | None:
        """Add the validation score of 1-based ``step`` (``best_mse``: the best checkpoint's
        MSE so far) and decide what the stable run does next.

        Returns
        -------
        str or None
            ``"branch"`` when a cool-down starts after this step (keep the current weights
            and optimiser state: they are the stable run's), ``"put_aside"`` when a
            cool-down ended here without ending the run (restore them), else None.
        """
        if self.cooldown is not None:
            return self._end_cooldown(step, val_score, best_mse)
        if not self.converge_mode:
            self.scores.append(val_score)
            return None
        if step <= self.warmup:
            return None  # cool-downs branch off the flat-rate run
        stable = step - self.set_aside
        end = step + self._cooldown_length(stable)
        last_chance = end >= self.config.total_steps
        if last_chance or self._due(step):
            self.cooldown = (step, min(self.config.total_steps, end))
            if self.cooldown[1] == step:  # a cool-down of no steps: score the stable run
                return self._end_cooldown(step, val_score, best_mse)
            return "branch"
        return None

    def _cooldown_length(self, stable_steps: int) -> int:
        return math.ceil(self.config.cooldown_frac * stable_steps)

    def _end_cooldown(self, step: int, val_score: float, best_mse: float) -> str | None:
        branch, end = self.cooldown
        stable = branch - self.set_aside
        whole = end - branch == self._cooldown_length(stable)  # not cut short by the cap
        previous = self.cooldowns[-1] if self.cooldowns else None
        self.cooldowns.append((stable, val_score))
        self.cooldown = None
        if whole and previous is not None and stable >= 2 * previous[0]:
            gain = relative_gain(previous[1], val_score)
            self.doubling_gains.append(gain)
            left = left_mean_predictor(best_mse, self.mean_predictor_mse,
                                       tol=self.config.converge_tol)
            if gain < self.config.converge_tol and left:
                self.plateau = Plateau(True, gain, 2, left)
                self.ended = True
                return None
        if end >= self.config.total_steps or len(self.cooldowns) >= len(self.branch_points):
            self.ended = True  # the budget leaves no room for another doubling
            return None
        self.set_aside += end - branch
        return "put_aside" if end > branch else None

    def is_last_step(self, step: int) -> bool:
        """True at the budget's last step, or when a cool-down ended the run."""
        return step == self.config.total_steps or self.ended

    def verdict(self, best_mse: float) -> Plateau:
        """Converge mode: whether a cool-down test passed, with the gain of the last whole
        doubling (NaN before one); fixed budget: the rule applied to all the scores
        (``best_mse``: the best checkpoint's)."""
        if not self.converge_mode:
            return self._rule(best_mse)
        if self.plateau is not None:
            return self.plateau
        left = left_mean_predictor(best_mse, self.mean_predictor_mse,
                                   tol=self.config.converge_tol)
        gain = self.doubling_gains[-1] if self.doubling_gains else math.nan
        return Plateau(False, gain, 2, left)

    def _rule(self, best_mse: float) -> Plateau:
        return plateaued(self.scores, tol=self.config.converge_tol, best_mse=best_mse,
                         mean_predictor_mse=self.mean_predictor_mse)


@dataclass
class StableRunState:
    """Copies of the weights and optimiser state of a ``converge`` run's stable phase, kept
    while a cool-down branches off and restored when it is put aside."""

    model: dict
    optimizer: dict

    @classmethod
    def keep(cls, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> StableRunState:
        """Copy the current state."""
        return cls(copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()))

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Put the copied state back."""
        model.load_state_dict(self.model)
        optimizer.load_state_dict(self.optimizer)


class TrainingBatches:
    """Training cells served as batches, from memory or read from the dataset's file.

    Batches follow a seeded stream of random permutations of the training cells (an epoch
    ends mid-batch without a short batch); a cells budget makes the last batch short so that
    exactly ``max_cells`` cells are seen.
    """

    def __init__(self, X: np.ndarray, rows: np.ndarray, *, in_memory: bool,
                 counts: np.ndarray | None = None) -> None:
        self.rows = rows
        self.in_memory = in_memory
        self.X = X
        self.values = torch.from_numpy(np.ascontiguousarray(X[rows], dtype=np.float32)) if in_memory else None
        self.counts = counts  # raw counts behind X (the nb objective), read per batch

    def gene_means(self, limit: int = 200_000) -> np.ndarray:
        """Per-gene means of the training cells (the first ``limit``), the baseline's prediction."""
        if self.values is not None:
            return gene_means(self.values[:limit].numpy())
        return gene_means(RowsOnDisk(self.X, self.rows[:limit]))

    def iterate(self, config: TrainConfig, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Yield positions (into the training rows) of each batch, for the whole budget."""
        order = np.empty(0, dtype=np.int64)
        budget_cells = config.max_cells if config.max_cells is not None else math.inf
        served = 0
        for _ in range(config.total_steps):
            want = int(min(config.batch_size, budget_cells - served))
            while len(order) < want:
                order = np.concatenate([order, rng.permutation(len(self.rows))])
            batch, order = order[:want], order[want:]
            served += want
            yield batch

    def fetch(self, positions: np.ndarray) -> torch.Tensor:
        """The expression values of a batch as a float32 tensor."""
        if self.values is not None:
            return self.values[torch.from_numpy(positions)]
        return self._read(self.X, positions)

    def fetch_counts(self, positions: np.ndarray) -> torch.Tensor | None:
        """The raw counts of a batch as a float32 tensor (None when not kept)."""
        return None if self.counts is None else self._read(self.counts, positions)

    def _read(self, matrix: np.ndarray, positions: np.ndarray) -> torch.Tensor:
        rows = self.rows[positions]
        order = np.argsort(rows)  # read in row order (sequential on disk), return in batch order
        values = np.empty((len(rows), matrix.shape[1]), dtype=np.float32)
        values[order] = read_rows(matrix, rows[order])
        return torch.from_numpy(values)


@dataclass(frozen=True)
class HeldOutSets:
    """Validation and test values with their fixed masks and per-gene-mean baselines (and raw
    counts for the ``nb`` objective).

    In memory, values and masks are arrays; streamed, they are read and drawn a block of rows
    at a time (:class:`~scalelib.data.store.RowsOnDisk`, :class:`~scalelib.heldout.FixedMask`),
    with the same values.
    """

    val_values: np.ndarray | RowsOnDisk
    val_mask: np.ndarray | FixedMask
    test_values: np.ndarray | RowsOnDisk
    test_mask: np.ndarray | FixedMask
    baseline_val_mse: float
    baseline_test_mse: float
    val_counts: np.ndarray | None = None
    test_counts: np.ndarray | None = None

    @classmethod
    def build(cls, dataset: ExpressionDataset, config: TrainConfig, train_means: np.ndarray,
              in_memory: bool = True) -> HeldOutSets:
        """Both splits and their masks (from ``config.eval_mask_seed``), and the baseline's
        scores (predicting ``train_means``); loaded into memory, or streamed."""
        val, test = dataset.split_indices("val"), dataset.split_indices("test")
        if len(val) == 0 or len(test) == 0:
            raise ScalelibError("the dataset has an empty validation or test split; rebuild it")
        seed, rate, n_genes = config.eval_mask_seed, config.mask_rate, dataset.n_genes
        counts = dataset.require_counts() if uses_counts(config.objective) else None
        if in_memory:
            val_values, test_values = dataset.split_values("val"), dataset.split_values("test")
            val_mask = fixed_mask(len(val), n_genes, rate, seed)
            test_mask = fixed_mask(len(test), n_genes, rate, seed + 1)
        else:
            val_values, test_values = RowsOnDisk(dataset.X, val), RowsOnDisk(dataset.X, test)
            val_mask = FixedMask(len(val), n_genes, rate, seed)
            test_mask = FixedMask(len(test), n_genes, rate, seed + 1)
        return cls(
            val_values, val_mask, test_values, test_mask,
            masked_mse_of_means(train_means, val_values, val_mask),
            masked_mse_of_means(train_means, test_values, test_mask),
            None if counts is None else RowsOnDisk(counts, val),
            None if counts is None else RowsOnDisk(counts, test),
        )


class BestCheckpoint:
    """Keeps the weights of the best validation score and decides on early stopping.

    The score is the validation MSE, or for a likelihood objective the validation bits per
    masked gene (what the run minimises); ``val_mse`` is the MSE at the best checkpoint.
    """

    def __init__(self, patience: int | None) -> None:
        self.patience = patience
        self.score: float = math.inf
        self.val_mse: float = math.inf
        self.val_bits: float | None = None
        self.step = 0
        self.state: dict | None = None
        self.evaluations_since_best = 0

    def update(self, scores: Scores, step: int, model: torch.nn.Module) -> None:
        """Record an evaluation; copy the weights when it is the best so far."""
        score = scores.mse if scores.bits is None else scores.bits
        if score < self.score:
            self.score, self.val_mse, self.val_bits, self.step = score, scores.mse, scores.bits, step
            self.state = copy.deepcopy(model.state_dict())
            self.evaluations_since_best = 0
        else:
            self.evaluations_since_best += 1

    @property
    def should_stop(self) -> bool:
        """True once ``patience`` evaluations in a row brought no improvement."""
        return self.patience is not None and self.evaluations_since_best >= self.patience


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings only (not biases, norms, mask vector,
    nor the per-gene parameters, which like biases are offsets of the outputs).

    Parameters
    ----------
    model
        The model whose parameters are optimised.
    config
        Supplies the learning rate and weight decay.
    device
        A CUDA device gets the fused implementation.
    """
    decayed = {name for name, p in model.named_parameters()
               if p.ndim >= 2 and not name.endswith("gene_parameters")}
    decay = [p for name, p in model.named_parameters() if name in decayed]
    no_decay = [p for name, p in model.named_parameters() if name not in decayed]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95), fused=device.type == "cuda")


def optimiser_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    values: torch.Tensor, mask: torch.Tensor, lr: float, config: TrainConfig,
                    dtype: str, targets: Targets | None = None,
                    masked_positions: float | None = None) -> float:
    """One AdamW step on the objective (``config.objective``) over masked positions.

    Parameters
    ----------
    model, optimizer
        The model and its optimiser (see :func:`make_optimizer`).
    values
        A batch of cells (cells x genes) on the model's device.
    mask
        Boolean, True at the positions masked in this draw.
    lr
        Learning rate of this step.
    config
        Supplies the gradient-norm clip and the objective.
    dtype
        ``"fp32"`` or ``"bf16"`` autocast of the forward pass.
    targets
        What the batch is scored against (default: ``values`` alone, enough but for ``nb``).
    masked_positions
        What the summed losses are divided by (default: the number masked in ``values``). A
        data-parallel rank passes the whole batch's number divided by the number of ranks (see
        :mod:`scalelib.distributed`).

    Returns
    -------
    float
        The batch loss before the step.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast(values.device, dtype):
        outputs = model(values, mask)
    loss = training_loss(config.objective, outputs, targets or Targets(values), mask,
                         masked_positions)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return loss.item()


def save_checkpoint(out_dir: Path, model: MaskedExpressionTransformer, config: TrainConfig,
                    seed: int, best_step: int) -> Path:
    """Write ``best.pt`` (weights, shape, config, seed, step) into ``out_dir``; return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "best.pt"
    torch.save({"state_dict": model.state_dict(), "size": model.size.to_dict(),
                "n_genes": model.n_genes, "head_outputs": model.head_outputs,
                "gene_outputs": model.gene_outputs,
                "config": config.to_dict(), "seed": seed, "step": best_step}, path)
    return path


def train(
    dataset: ExpressionDataset,
    size: ModelSize,
    config: TrainConfig,
    *,
    seed: int = 0,
    n_train: int | None = None,
    out_dir: str | Path | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    progress: bool = True,
    in_memory: bool = True,
) -> TrainResult:
    """Train one model and score its best-validation checkpoint on the test set.

    Parameters
    ----------
    dataset
        Normalised log1p expression with train/val/test splits.
    size
        Model shape (see :mod:`scalelib.config`).
    config
        Hyper-parameters and budget.
    seed
        Seeds initialisation, batch order, training masks and dropout.
    n_train
        Use the nested training subset of this many cells (all training cells when None).
    out_dir
        Where to write ``best.pt``, ``curve.parquet`` and ``pergene.parquet`` (the best
        checkpoint's validation error per gene, see :meth:`Scores.per_gene`); nothing is
        written when None.
        While the run lasts it also holds ``resume.pt``: a run whose ``out_dir`` holds the
        resume file of the same run goes on from its last evaluation (see
        :mod:`scalelib.resume`; single-process runs only, not under torchrun).
    on_step
        Called with a :class:`StepInfo` after every optimiser step (for notebooks).
    progress
        Show a terminal progress bar.
    in_memory
        Load the training, validation and test cells into memory (True), or stream them:
        read each batch, and each block of a validation pass, from the dataset's file
        (False), so that memory holds a batch, a block and the model, however many cells
        the dataset has.

    Returns
    -------
    TrainResult
        Metrics and a per-step curve with columns step, cells_seen, train_loss, val_mse
        (null between evaluations), lr, elapsed_s, val_bits (null for the MSE objective) and
        cooldown (0, or k for the steps of the ``converge`` mode's k-th cool-down; all but
        the last were put aside, see :class:`Convergence`).
        A validation score that turns non-finite after a finite one ends the run early with
        the best checkpoint so far.

    Raises
    ------
    TrainingDiverged
        When the first validation score is not finite (no checkpoint to keep).
    """
    # Set-up: hardware, processes, data, baseline, model, optimiser, random streams.
    started = time.perf_counter()
    group = current()  # the data-parallel processes under torchrun (else this one alone)
    device = group.device(resolve_device(config.device))
    dtype = resolve_dtype(config.dtype, device, size)
    torch.manual_seed(seed)
    objective = config.objective
    counts = dataset.require_counts() if uses_counts(objective) else None
    target_sum = normalisation_total(dataset) if uses_counts(objective) else None
    batches = TrainingBatches(dataset.X, dataset.split_indices("train", n_train),
                              in_memory=in_memory, counts=counts)
    held_out = HeldOutSets.build(dataset, config, batches.gene_means(), in_memory=in_memory)
    model = MaskedExpressionTransformer(size, dataset.n_genes, dropout=config.dropout,
                                        attention_dropout=config.attention_dropout,
                                        head_outputs=HEAD_OUTPUTS[objective],
                                        gene_outputs=GENE_OUTPUTS[objective]).to(device)
    network = group.data_parallel(model, seed)  # what training steps go through
    optimizer = make_optimizer(model, config, device)
    score = functools.partial(evaluate, model, batch_size=config.eval_batch_size, device=device,
                              dtype=dtype, objective=objective, target_sum=target_sum,
                              group=group)
    converge_mode = config.budget_mode == "converge"  # the convergence rule replaces patience
    best = BestCheckpoint(patience=None if converge_mode else config.patience)
    convergence = Convergence(config, mean_predictor_mse=held_out.baseline_val_mse)
    batch_rng = np.random.default_rng(seed)
    mask_rng = torch.Generator(device="cpu").manual_seed(seed)
    peak_lr = config.peak_lr(size.d_model)
    curve: list[dict] = []
    interval_losses: list[float] = []
    cells_seen = masked_seen = 0
    final_train_loss = math.nan
    stable_run: StableRunState | None = None  # put aside while a cool-down branches off
    diverged = False
    resume = ResumeFile(out_dir if group.world_size == 1 else None, run_identity(
        fingerprint=dataset.fingerprint, n_genes=dataset.n_genes, size=size.to_dict(),
        config=config.to_dict(), seed=seed, n_train=n_train, device=device, dtype=dtype))
    if (saved := resume.load()) is not None:  # a killed run goes on from its last evaluation
        saved.restore(model, optimizer, best, convergence, mask_rng, device)
        curve, cells_seen, masked_seen = saved.curve, saved.cells_seen, saved.masked_seen
        final_train_loss, started = saved.final_train_loss, started - saved.elapsed_s
        if convergence.cooldown is not None:  # saved as a cool-down branched off
            stable_run = StableRunState.keep(model, optimizer)
    bar = tqdm(total=config.total_steps, initial=len(curve), desc=f"{size.name} seed {seed}",
               disable=None if progress and group.is_main else True,
               leave=False)  # None: off unless a tty

    # The loop: one optimiser step per batch, a validation pass every eval_every steps.
    # With several processes each takes its shard of the batch and of its mask.
    model.train()
    for step, positions in enumerate(batches.iterate(config, batch_rng), start=1):
        if step <= len(curve):
            continue  # trained before the run was resumed: skip its batch in the data order
        lr = learning_rate(step - 1, config, peak_lr, convergence.cooldown)
        cooldown = convergence.cooldown_number(step)
        mask = torch.rand((len(positions), dataset.n_genes), generator=mask_rng) < config.mask_rate
        shard = group.shard(len(positions))
        values = batches.fetch(positions[shard]).to(device, non_blocking=True)
        batch_counts = batches.fetch_counts(positions[shard])
        targets = Targets(values, None if batch_counts is None else batch_counts.to(device),
                          target_sum)
        per_rank = int(mask.sum()) / group.world_size if group.world_size > 1 else None
        loss = optimiser_step(network, optimizer, values, mask[shard].to(device), lr, config,
                              dtype, targets, masked_positions=per_rank)
        loss = group.sum(loss)[0] / group.world_size
        cells_seen += len(positions)
        masked_seen += int(mask.sum())
        interval_losses.append(loss)
        val_mse = val_bits = None
        if convergence.evaluates(step):
            scores = score(held_out.val_values, held_out.val_mask, counts=held_out.val_counts)
            val_mse, val_bits = scores.mse, scores.bits
            val_score = val_mse if val_bits is None else val_bits  # what the run minimises
            final_train_loss = float(np.mean(interval_losses))
            interval_losses = []
            if math.isfinite(val_score) and math.isfinite(val_mse):
                best.update(scores, step, model)
                action = convergence.record(step, val_score, best.val_mse)
                if action == "branch":
                    stable_run = StableRunState.keep(model, optimizer)
                elif action == "put_aside":
                    stable_run.restore(model, optimizer)
            elif best.state is None:
                raise TrainingDiverged(
                    f"{size.name} seed {seed}: validation score is {val_score} at step {step}, "
                    "before any finite evaluation; lower the learning rate (--lr)")
            else:
                diverged = True  # stop, keeping the best checkpoint so far
            bar.set_postfix(loss=f"{final_train_loss:.4f}", val=f"{val_score:.4f}")
        elapsed = time.perf_counter() - started
        curve.append({"step": step, "cells_seen": cells_seen, "train_loss": loss,
                      "val_mse": val_mse, "lr": lr, "elapsed_s": elapsed, "val_bits": val_bits,
                      "cooldown": cooldown})
        bar.update(1)
        last_step = best.should_stop or diverged or convergence.is_last_step(step)
        if val_mse is not None and not last_step:
            resume.save(step, model=model, optimizer=optimizer, best=best,
                        convergence=convergence, mask_rng=mask_rng, device=device, curve=curve,
                        tallies={"cells_seen": cells_seen, "masked_seen": masked_seen,
                                 "final_train_loss": final_train_loss, "elapsed_s": elapsed})
        if on_step is not None:
            best_so_far = best.val_mse if best.state is not None else None
            on_step(StepInfo(step, config.total_steps, cells_seen, loss, lr, val_mse, best_so_far,
                             elapsed, val_bits, cooldown))
        if last_step:
            break
    bar.close()

    # Finish: score the best weights on the test set, save them, the curve and per-gene errors.
    model.load_state_dict(best.state)
    verdict = convergence.verdict(best.val_mse)
    test = score(held_out.test_values, held_out.test_mask, counts=held_out.test_counts)
    curve_table = pl.DataFrame(curve, schema=CURVE_SCHEMA)
    checkpoint = None
    if out_dir is not None:  # every rank scores (a collective); the main one writes
        val = score(held_out.val_values, held_out.val_mask, counts=held_out.val_counts)
    if out_dir is not None and group.is_main:
        checkpoint = str(save_checkpoint(Path(out_dir), model, config, seed, best.step))
        curve_table.write_parquet(Path(out_dir) / "curve.parquet")
        val.per_gene(dataset.genes).write_parquet(Path(out_dir) / "pergene.parquet")
        resume.remove()  # the run is finished: its files hold what it gives
    return TrainResult(
        params=model.num_parameters(),
        flops_per_cell=model.training_flops_per_cell(),
        steps=len(curve),
        budget_steps=config.total_steps,
        cells_seen=cells_seen,
        tokens_seen=cells_seen * dataset.n_genes,
        masked_tokens_seen=masked_seen,
        best_step=best.step,
        best_val_mse=best.val_mse,
        test_mse=test.mse,
        objective=objective,
        best_val_bits=best.val_bits,
        test_bits=test.bits,
        baseline_val_mse=held_out.baseline_val_mse,
        baseline_test_mse=held_out.baseline_test_mse,
        final_train_loss=final_train_loss,
        stopped_early=best.should_stop or diverged,
        converged=verdict.converged,
        val_improvement=verdict.improvement,
        wall_time_s=time.perf_counter() - started,
        device=str(device),
        dtype=dtype,
        world_size=group.world_size,
        checkpoint=checkpoint,
        curve=curve_table,
    )


def normalisation_total(dataset: ExpressionDataset) -> float:
    """The total each cell was normalised to before log1p, from the dataset's manifest.

    Parameters
    ----------
    dataset
        A dataset built from raw counts (its manifest records ``normalize_total``).
    """
    try:
        return float(dataset.manifest["preprocessing"]["normalize_total"]["target_sum"])
    except (KeyError, TypeError):
        raise ScalelibError("the dataset's manifest does not record the normalisation total; "
                            "rebuild it from raw counts with `scalelib data build`") from None


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> MaskedExpressionTransformer:
    """Rebuild a trained model from a ``best.pt`` written by :func:`train`.

    Parameters
    ----------
    path
        The checkpoint file.
    map_location
        Device to load the weights onto.

    Returns
    -------
    MaskedExpressionTransformer
        The model in eval mode.
    """
    path = Path(path)
    if not path.exists():
        raise ScalelibError(f"no checkpoint at {path}; train the run first")
    saved = torch.load(path, map_location=map_location, weights_only=True)
    model = MaskedExpressionTransformer(ModelSize(**saved["size"]), saved["n_genes"],
                                        head_outputs=saved.get("head_outputs", 1),
                                        gene_outputs=saved.get("gene_outputs", 0))
    model.load_state_dict(saved["state_dict"])
    return model.eval()
