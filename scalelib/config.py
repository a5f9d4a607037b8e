"""Frozen configuration: model sizes and ladders, data regimes, training presets.

Everything here is plain data. Other modules import from here; this module imports nothing
from scalelib.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from scalelib.errors import ScalelibError


@dataclass(frozen=True)
class ModelSize:
    """Shape of one transformer in a ladder.

    Parameters
    ----------
    name
        Label used in tables and plots (``"XS"``).
    d_model
        Width of the token embeddings.
    n_layers
        Number of pre-LayerNorm encoder blocks.
    n_heads
        Attention heads; must divide ``d_model``.
    ff_mult
        Feed-forward width as a multiple of ``d_model``.
    """

    name: str
    d_model: int
    n_layers: int
    n_heads: int
    ff_mult: int

    def __post_init__(self) -> None:
        if min(self.d_model, self.n_layers, self.n_heads, self.ff_mult) < 1:
            raise ScalelibError(f"size {self.name}: every dimension must be a positive integer")
        if self.d_model % self.n_heads:
            raise ScalelibError(
                f"size {self.name}: d_model={self.d_model} is not divisible by "
                f"n_heads={self.n_heads}; choose a head count that divides d_model"
            )

    def to_dict(self) -> dict:
        """Return the size as a plain dictionary."""
        return asdict(self)


# The reference study's ladder (Kendiukhov 2026, arXiv 2602.15253), by name.
PAPER_LADDER: tuple[ModelSize, ...] = (
    ModelSize("XXS", 1, 1, 1, 1),
    ModelSize("TINY", 16, 1, 1, 1),
    ModelSize("XS", 64, 2, 4, 4),
    ModelSize("S", 128, 4, 8, 4),
    ModelSize("M", 512, 6, 8, 4),
    ModelSize("L", 1020, 8, 12, 4),
    ModelSize("XL", 1536, 12, 16, 4),
)

# A CPU ladder: seven sizes over three orders of magnitude of P (at V=128: 149 to 158,401
# parameters), small enough that `scalelib demo` trains all of them on both demo regimes in
# minutes on two cores.
DEMO_LADDER: tuple[ModelSize, ...] = (
    ModelSize("D0", 1, 1, 1, 1),
    ModelSize("D1", 4, 1, 1, 2),
    ModelSize("D2", 8, 1, 2, 2),
    ModelSize("D3", 16, 1, 2, 4),
    ModelSize("D4", 32, 2, 4, 4),
    ModelSize("D5", 48, 2, 4, 4),
    ModelSize("D6", 64, 3, 4, 4),
)

# Two tiny sizes and a third for tests and notebook smoke runs.
SMOKE_LADDER: tuple[ModelSize, ...] = (
    ModelSize("T0", 2, 1, 1, 1),
    ModelSize("T1", 8, 1, 2, 2),
    ModelSize("T2", 16, 1, 2, 2),
)

LADDERS: dict[str, tuple[ModelSize, ...]] = {
    "paper": PAPER_LADDER,
    "demo": DEMO_LADDER,
    "smoke": SMOKE_LADDER,
}


def get_ladder(name: str) -> tuple[ModelSize, ...]:
    """Return a named ladder of model sizes.

    Parameters
    ----------
    name
        One of ``"paper"``, ``"demo"``, ``"smoke"``.
    """
    try:
        return LADDERS[name]
    except KeyError:
        raise ScalelibError(
            f"unknown ladder {name!r}; choose one of {', '.join(LADDERS)}"
        ) from None


def select_sizes(ladder: tuple[ModelSize, ...], names: list[str] | None) -> tuple[ModelSize, ...]:
    """Keep the sizes of ``ladder`` named in ``names`` (all of them when ``names`` is None)."""
    if not names:
        return ladder
    by_name = {size.name: size for size in ladder}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ScalelibError(
            f"unknown size(s) {', '.join(unknown)}; this ladder has {', '.join(by_name)}"
        )
    return tuple(by_name[name] for name in names)


@dataclass(frozen=True)
class Regime:
    """A data regime: vocabulary size V and number of cells D drawn.

    Parameters
    ----------
    name
        ``"rich"`` or ``"limited"`` (or a user label).
    n_genes
        Number of highly variable genes kept (the token vocabulary V).
    n_cells
        Number of cells drawn before the 90/5/5 split.
    """

    name: str
    n_genes: int
    n_cells: int


# The reference study's regimes.
PAPER_REGIMES: dict[str, Regime] = {
    "rich": Regime("rich", n_genes=512, n_cells=200_000),
    "limited": Regime("limited", n_genes=1024, n_cells=10_000),
}

# The demo keeps the paper's contrast (the limited regime has twice the genes and a
# twentieth of the cells) at a size two CPU cores train in minutes.
DEMO_REGIMES: dict[str, Regime] = {
    "rich": Regime("rich", n_genes=128, n_cells=20_000),
    "limited": Regime("limited", n_genes=256, n_cells=1_000),
}


# Seconds-long versions for tests and notebook smoke runs.
SMOKE_REGIMES: dict[str, Regime] = {
    "rich": Regime("rich", n_genes=32, n_cells=1_500),
    "limited": Regime("limited", n_genes=64, n_cells=300),
}

REGIME_PRESETS: dict[str, dict[str, Regime]] = {
    "paper": PAPER_REGIMES,
    "demo": DEMO_REGIMES,
    "smoke": SMOKE_REGIMES,
}


def get_regime(name: str, preset: str = "paper") -> Regime:
    """Return a named regime of the ``paper``, ``demo`` or ``smoke`` preset."""
    table = REGIME_PRESETS.get(preset)
    if table is None:
        raise ScalelibError(
            f"unknown regime preset {preset!r}; choose one of {', '.join(REGIME_PRESETS)}"
        )
    if name not in table:
        raise ScalelibError(f"unknown regime {name!r}; choose one of {', '.join(table)}")
    return table[name]


DEFAULT_MAX_STEPS = 1000
OBJECTIVES = ("mse", "gaussian", "nb", "nb_gene")  # training objectives, see scalelib.objectives


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters and budget of one training run.

    At most one of ``max_steps`` and ``max_cells`` sets the budget (1,000 steps when neither).
    With ``budget_mode="converge"`` that budget is a cap: the run trains until the convergence
    rule of :mod:`scalelib.convergence` holds, then cools the learning rate down and stops.

    Parameters
    ----------
    max_steps
        Budget in optimiser steps.
    max_cells
        Budget in training cells seen, exactly: the last batch is cut short when needed.
    batch_size
        Cells per optimiser step.
    lr
        Peak learning rate (at ``lr_reference_width`` when that is set).
    lr_reference_width
        When set, each model's peak rate is ``lr * (lr_reference_width / d_model) **
        lr_width_exponent``: narrow models take larger steps, as in width-scaled (muP-like)
        parameterisations; without it a 149-parameter model barely moves in a short budget.
    lr_width_exponent
        Exponent of that width rule.
    schedule
        ``"cosine"`` (linear warm-up then cosine decay to ``min_lr_ratio * lr``) or
        ``"constant"`` (linear warm-up then flat, as in the reference study). Ignored in the
        ``converge`` budget mode, whose schedule is warm-up, flat, then a linear cool-down.
    budget_mode
        ``"fixed"``: train for the whole budget. ``"converge"``: train until a cool-down
        branched off at twice the steps of the previous one improves on it by less than
        ``converge_tol`` (see :mod:`scalelib.convergence`), capped by the budget; cells seen
        become an outcome of the run.
    converge_tol
        Relative improvement below which a run counts as converged: of the best validation
        score over the last half of the evaluations (the rule that labels fixed-budget runs),
        and of a cool-down over the previous one (the ``converge`` mode's test).
    cooldown_frac
        In the ``converge`` mode, each cool-down decays the learning rate linearly to
        ``min_lr_ratio * lr`` over this fraction of the flat-rate steps it branches off at
        (cool-downs branch off at doubling numbers of those steps,
        :func:`scalelib.convergence.doubling_schedule`).
    min_lr_ratio
        Where the cosine decay ends, as a fraction of the peak rate.
    warmup_frac
        Fraction of the budget spent warming up.
    weight_decay, grad_clip
        AdamW weight decay and global gradient-norm clip.
    mask_rate
        Probability that a gene token is masked.
    dropout
        Dropout on the feed-forward hidden layer and both residual branches.
    attention_dropout
        Dropout on attention weights (None: same as ``dropout``, as in the reference
        architecture). Setting it to 0 lets a CPU use its fused attention kernel.
    eval_every
        Validation interval in optimiser steps (a final evaluation always runs).
    patience
        Stop after this many evaluations without improvement (None: never stop early).
    dtype
        ``"auto"``, ``"fp32"`` or ``"bf16"`` (autocast for matrix products).
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"`` or an explicit torch device string.
    eval_batch_size
        Cells per forward pass when scoring validation and test sets.
    eval_mask_seed
        Seed of the fixed validation and test masks; shared by every run so that all runs
        are scored on the same masked positions.
    objective
        ``"mse"`` (squared error of the normalised value), ``"gaussian"`` (heteroscedastic
        Gaussian NLL of the normalised value), ``"nb"`` (negative-binomial NLL of the raw
        count, dispersion predicted per cell and gene; needs a dataset that keeps counts) or
        ``"nb_gene"`` (the same with one learned dispersion per gene); see
        :mod:`scalelib.objectives`. Likelihood
        objectives choose the best checkpoint, stop early and converge on validation bits.
    """

    max_steps: int | None = None
    max_cells: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    lr_reference_width: int | None = None
    lr_width_exponent: float = 1.0
    schedule: str = "cosine"
    warmup_frac: float = 0.05
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    mask_rate: float = 0.15
    dropout: float = 0.1
    attention_dropout: float | None = None
    eval_every: int = 100
    patience: int | None = None
    budget_mode: str = "fixed"
    converge_tol: float = 0.01
    cooldown_frac: float = 0.2
    dtype: str = "auto"
    device: str = "auto"
    eval_batch_size: int = 256
    eval_mask_seed: int = 20260215
    objective: str = "mse"

    def __post_init__(self) -> None:
        if self.max_steps is not None and self.max_cells is not None:
            raise ScalelibError("set one budget, max_steps or max_cells, not both")
        if self.max_steps is None and self.max_cells is None:
            object.__setattr__(self, "max_steps", DEFAULT_MAX_STEPS)
        budget = self.max_steps if self.max_steps is not None else self.max_cells
        if budget < 1:
            raise ScalelibError("the training budget must be at least 1")
        if self.schedule not in ("cosine", "constant"):
            raise ScalelibError(f"unknown schedule {self.schedule!r}; choose cosine or constant")
        if not 0.0 < self.mask_rate < 1.0:
            raise ScalelibError(f"mask_rate must lie in (0, 1), got {self.mask_rate}")
        if self.dtype not in ("auto", "fp32", "bf16"):
            raise ScalelibError(f"unknown dtype {self.dtype!r}; choose auto, fp32 or bf16")
        if self.batch_size < 1 or self.eval_every < 1 or self.eval_batch_size < 1:
            raise ScalelibError("batch_size, eval_every and eval_batch_size must be positive")
        if self.objective not in OBJECTIVES:
            raise ScalelibError(f"unknown objective {self.objective!r}; choose "
                                f"{', '.join(OBJECTIVES)} (--objective)")
        if self.budget_mode not in ("fixed", "converge"):
            raise ScalelibError(f"unknown budget mode {self.budget_mode!r}; choose fixed or "
                                "converge")
        if not 0.0 < self.converge_tol < 1.0:
            raise ScalelibError(f"converge_tol must lie in (0, 1), got {self.converge_tol}")
        if not 0.0 <= self.cooldown_frac <= 1.0:
            raise ScalelibError(f"cooldown_frac must lie in [0, 1], got {self.cooldown_frac}")
        self._check_rates()

    def _check_rates(self) -> None:
        """Learning rate, regularisation and schedule settings: finite and in range."""
        def require(ok: bool, message: str) -> None:
            if not ok:
                raise ScalelibError(message)

        finite = math.isfinite
        require(finite(self.lr) and self.lr > 0,
                f"the learning rate must be a positive number (--lr), got {self.lr}")
        require(finite(self.lr_width_exponent), "lr_width_exponent must be finite")
        require(self.lr_reference_width is None or self.lr_reference_width >= 1,
                "lr_reference_width must be a positive width")
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            require(value is None or 0.0 <= value < 1.0,
                    f"{name} must lie in [0, 1) (--{name.replace('_', '-')}), got {value}")
        require(self.patience is None or self.patience >= 1,
                f"patience must be at least 1 evaluation (--patience), got {self.patience}")
        require(finite(self.weight_decay) and self.weight_decay >= 0,
                f"weight_decay must be 0 or positive, got {self.weight_decay}")
        require(finite(self.grad_clip) and self.grad_clip > 0,
                f"grad_clip must be positive, got {self.grad_clip}")
        require(0.0 <= self.warmup_frac < 1.0,
                f"warmup_frac must lie in [0, 1), got {self.warmup_frac}")
        require(0.0 <= self.min_lr_ratio <= 1.0,
                f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")

    @property
    def total_steps(self) -> int:
        """Optimiser steps this budget allows."""
        if self.max_steps is not None:
            return self.max_steps
        return -(-self.max_cells // self.batch_size)

    def peak_lr(self, d_model: int) -> float:
        """The peak learning rate of a model of width ``d_model``."""
        if self.lr_reference_width is None:
            return self.lr
        return self.lr * (self.lr_reference_width / d_model) ** self.lr_width_exponent

    def with_(self, **changes) -> TrainConfig:
        """Return a copy with some fields changed."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """Return the configuration as a plain dictionary."""
        return asdict(self)


def find_size(name: str) -> ModelSize:
    """Look a size up by name in every ladder (paper first)."""
    for ladder in LADDERS.values():
        for size in ladder:
            if size.name == name:
                return size
    known = ", ".join(size.name for ladder in LADDERS.values() for size in ladder)
    raise ScalelibError(f"unknown size {name!r}; known sizes: {known}")


# Training presets. `paper` follows what the reference study states (AdamW, a constant
# learning rate, mixed precision, 15% masking); its learning rate, batch size and budget are our
# choices, as the study does not give them. `demo` is tuned so that `scalelib demo` trains
# the demo ladder on both demo regimes in minutes on two CPU cores: learning rates scale with
# width (a scan per size on the rich demo regime put the best rates between 0.1 at d=4 and 0.005
# at d=64), and attention-weight dropout is off because on a CPU it forces PyTorch's unfused
# attention, 5x slower (`scalelib bench --size S --attention-dropout 0.1` vs `0`); dropout 0.1
# stays on the feed-forward and residual branches. `smoke` is for tests.
TRAIN_PRESETS: dict[str, TrainConfig] = {
    "paper": TrainConfig(max_cells=2_000_000, batch_size=64, lr=1e-4, schedule="constant",
                         warmup_frac=0.01, eval_every=500, dtype="bf16"),
    "demo": TrainConfig(max_cells=40_000, batch_size=64, lr=0.012, lr_reference_width=32,
                        lr_width_exponent=0.75, eval_every=50, patience=4,
                        attention_dropout=0.0),
    "smoke": TrainConfig(max_steps=30, batch_size=32, lr=0.012, lr_reference_width=32,
                         lr_width_exponent=0.75, eval_every=10, attention_dropout=0.0),
}


@dataclass(frozen=True)
class CalibrationPreset:
    """What ``scalelib calibrate`` simulates and trains (see :mod:`scalelib.calibrate`).

    Parameters
    ----------
    name
        ``"smoke"`` or ``"demo"``.
    n_genes, n_cells
        Genes and cells of the mixture dataset (without ``--fit-to``, or at most the fitted
        dataset's genes with it).
    ladder, sizes
        The ladder and the sizes of it that are trained.
    train
        Training configuration: the ``converge`` budget mode, its budget a cap.
    n_bootstrap
        Bootstrap resamples of the fits.
    n_types, rank
        Cell types of the count simulator the mixture is fitted to (or clusters of unlabelled
        ``--fit-to`` data) and gene programs per type; ``--types`` and ``--rank`` override them.
    """

    name: str
    n_genes: int
    n_cells: int
    ladder: str
    sizes: tuple[str, ...]
    train: TrainConfig
    n_bootstrap: int
    n_types: int = 8
    rank: int = 8


# `smoke` checks the calibration's machinery in minutes on two CPU cores, on a deliberately small
# and easy mixture (V = 16 genes, 2 types, rank 2): on the 8-type, rank-8 mixture at V = 32 the
# demo ladder's runs still improve 4-5% per doubling past 400,000 cells. It leaves out D0: at
# width 1 LayerNorm returns its bias alone, so D0 is the per-gene mean predictor by construction
# and could never be called converged. Batches of 256 cost 25-35% less CPU per cell than 64 at
# the same loss per cell. The cap is where the runs stop, not a share of the work: at 1.2M cells
# every run met the converge test (most within half of it), at 600k the MSE runs' last doubling
# still bought 1.0-1.1% (README, calibrate).
# `demo` trains the whole demo ladder on a mixture the size of the demo's rich regime.
CALIBRATION_PRESETS: dict[str, CalibrationPreset] = {
    "smoke": CalibrationPreset(
        "smoke", n_genes=16, n_cells=40_000, ladder="demo",
        sizes=("D1", "D2", "D3", "D4"),
        train=TRAIN_PRESETS["demo"].with_(budget_mode="converge", max_cells=1_200_000,
                                          batch_size=256, eval_every=12, patience=None),
        n_bootstrap=200, n_types=2, rank=2),
    "demo": CalibrationPreset(
        "demo", n_genes=128, n_cells=20_000, ladder="demo",
        sizes=tuple(size.name for size in DEMO_LADDER),
        train=TRAIN_PRESETS["demo"].with_(budget_mode="converge", max_cells=300_000,
                                          patience=None),
        n_bootstrap=1000),
}


def notebook_sweep_dir(preset: str) -> Path:
    """Where the notebooks keep a preset's sweep: ``data/demo`` (shared with ``scalelib demo``)
    for the demo preset, ``data/notebook/<preset>`` for the others.

    Parameters
    ----------
    preset
        Regime and training preset name (``demo``, ``smoke``, ``paper``).
    """
    return Path("data/demo" if preset == "demo" else f"data/notebook/{preset}")
