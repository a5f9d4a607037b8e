"""A simulator whose masked-reconstruction floor is known: a Gaussian mixture on log expression.

Generative model
----------------
Cell ``i`` has a type ``t ~ Categorical(pi)`` and normalised log expression

.. code-block:: text

    x_i ~ N(m_t, F_t F_t^T + diag(d_t))        x_i in R^V, F_t in R^(V x R), d_t > 0

a mean per type, ``R`` gene programs per type (low-rank covariance) and per-gene noise. The
values are the model's input as they are: they stand for normalised log1p expression, but
are continuous and may be negative (there are no raw counts, no library sizes and no point
mass at zero behind them).

What is exact
-------------
The task of :mod:`scalelib.train` is to predict each masked gene ``j`` of a cell from its
unmasked genes ``O``. Given ``x_O`` the mixture's conditional of ``x_j`` is again a mixture,
of univariate Gaussians: component ``t`` has posterior weight
``w_t proportional to pi_t N(x_O; m_tO, S_tOO)``, mean ``m_tj + S_tjO S_tOO^-1 (x_O - m_tO)`` and
variance ``S_tjj - S_tjO S_tOO^-1 S_tOj``. Its mean is the Bayes-optimal (posterior-mean)
prediction, so the expected squared error of that predictor, the posterior variance, is the
lowest MSE any model can reach: the true floor of ``c``. Its density at the realised value
gives the conditional entropy ``-E log2 p(x_j | x_O)`` of a masked gene, in bits, without
approximation. With ``S_t = D + F F^T`` every solve goes through Woodbury's identity and the
``R x R`` matrix ``A = I + F_O^T D_O^-1 F_O``:

.. code-block:: text

    conditional mean      m_j + F_j A^-1 F_O^T D_O^-1 (x_O - m_O)
    conditional variance  d_j + F_j A^-1 F_j^T
    log N(x_O)            -(r^T D_O^-1 r - b^T A^-1 b + sum log d_O + log det A
                            + |O| log 2 pi) / 2,   r = x_O - m_O, b = F_O^T D_O^-1 r

so a cell costs ``O(K V R^2)`` whatever its mask.

:func:`fit_mixture` takes the parameters from labelled cells (per-type means, the top ``R``
principal axes of each type's covariance as programs, the rest of each gene's variance as its
noise): real data, or the cells of the count simulator (:mod:`scalelib.data.floor_dataset`). :func:`masked_floor` scores the
Bayes predictor on given cells and masks (the validation cells under the validation mask);
:func:`expected_floor` estimates the population floor from fresh cells and masks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import logsumexp

from scalelib.errors import ScalelibError

LOG_2PI = float(np.log(2 * np.pi))
CHUNK_CELLS = 1024  # cells per batch of posterior computations
MIN_TYPE_CELLS = 2  # a fitted type needs this many cells (smaller ones are left out)
MIN_PROGRAM_CELLS = 20  # and this many for programs (fewer: a diagonal covariance)
NOISE_FLOOR = 0.05  # a fitted gene's noise variance is at least this share of its variance
MIN_NOISE = 1e-3  # and at least this (genes constant within a type)


@dataclass(frozen=True)
class GaussianMixture:
    """Mixture of ``K`` Gaussians over ``V`` genes with low-rank-plus-diagonal covariances.

    Parameters
    ----------
    weights
        ``(K,)`` type probabilities (sum to 1).
    means
        ``(K, V)`` mean log expression per type.
    factors
        ``(K, V, R)`` gene-program loadings per type.
    noise
        ``(K, V)`` per-gene noise variances per type (positive).
    type_names
        One label per type.
    """

    weights: np.ndarray
    means: np.ndarray
    factors: np.ndarray
    noise: np.ndarray
    type_names: tuple[str, ...]

    def __post_init__(self) -> None:
        k, v, _ = self.factors.shape
        if self.means.shape != (k, v) or self.noise.shape != (k, v) or self.weights.shape != (k,):
            raise ScalelibError("mixture parameters disagree in shape: weights (K,), means and "
                                "noise (K, V), factors (K, V, R)")
        if len(self.type_names) != k:
            raise ScalelibError("give one type name per mixture component")
        if not np.all(self.noise > 0) or not np.isclose(self.weights.sum(), 1.0):
            raise ScalelibError("mixture noise must be positive and weights must sum to 1")

    @property
    def n_types(self) -> int:
        """Number of components K."""
        return len(self.weights)

    @property
    def n_genes(self) -> int:
        """Number of genes V."""
        return self.means.shape[1]

    @property
    def rank(self) -> int:
        """Programs per type R."""
        return self.factors.shape[2]

    def sample(self, n_cells: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw cells.

        Parameters
        ----------
        n_cells
            Number of cells.
        rng
            Random generator.

        Returns
        -------
        values, types
            ``(n_cells, V)`` float64 values and the ``(n_cells,)`` type of each cell.
        """
        types = rng.choice(self.n_types, n_cells, p=self.weights)
        programs = rng.standard_normal((n_cells, self.rank))
        values = self.means[types] + np.sqrt(self.noise[types]) * rng.standard_normal(
            (n_cells, self.n_genes))
        values += np.einsum("nvr,nr->nv", self.factors[types], programs)
        return values, types

    def summary(self) -> dict:
        """Sizes and scales of the parameters, for a manifest."""
        program_var = np.einsum("kvr,kvr->kv", self.factors, self.factors)
        return {
            "n_types": self.n_types, "n_genes": self.n_genes, "rank": self.rank,
            "weights": [round(float(w), 6) for w in self.weights],
            "type_names": list(self.type_names),
            "mean_noise_variance": float(self.weights @ self.noise.mean(axis=1)),
            "mean_program_variance": float(self.weights @ program_var.mean(axis=1)),
            "between_type_variance": float(self.weights @ np.square(
                self.means - self.weights @ self.means).mean(axis=1)),
        }


def fit_mixture(values: np.ndarray, labels: np.ndarray, *, rank: int = 8) -> GaussianMixture:
    """Take a mixture's parameters from cells with type labels.

    Per type (with at least :data:`MIN_TYPE_CELLS` cells; smaller types are left out and the
    weights renormalised): the weight is its share of cells, the mean its mean, the programs
    the top ``rank`` eigenvectors of its covariance scaled by the square root of their
    eigenvalue minus the mean of the remaining ones (probabilistic PCA; none for a type of
    fewer than :data:`MIN_PROGRAM_CELLS` cells), and each gene's noise the rest of its
    variance, at least :data:`NOISE_FLOOR` of it and :data:`MIN_NOISE`.
    So each type keeps its genes' means and variances and its main axes of co-variation.

    Parameters
    ----------
    values
        ``(n_cells, V)`` normalised log expression.
    labels
        ``(n_cells,)`` type of each cell (cluster labels serve as well).
    rank
        Programs per type R (at most a type's cells minus 2).
    """
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(labels).astype(str)
    names, counts = np.unique(labels, return_counts=True)
    kept = names[counts >= MIN_TYPE_CELLS]
    if len(kept) == 0:
        raise ScalelibError(f"no cell type has {MIN_TYPE_CELLS} cells to fit a mixture "
                            "component on; fit to a dataset with more cells")
    _check_shape(values.shape[1], len(kept), rank)
    fitted = [_fit_type(values[labels == name], rank) for name in kept]
    weights = np.array([float((labels == name).sum()) for name in kept])
    return GaussianMixture(weights / weights.sum(), np.stack([f[0] for f in fitted]),
                           np.stack([f[1] for f in fitted]), np.stack([f[2] for f in fitted]),
                           tuple(str(name) for name in kept))


def _fit_type(values: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, ``(V, R)`` programs and per-gene noise of one type (probabilistic PCA)."""
    mean = values.mean(axis=0)
    covariance = np.cov(values, rowvar=False)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
    used = min(rank, len(values) - 2) if len(values) >= MIN_PROGRAM_CELLS else 0
    discarded = max(float(eigenvalues[used:].mean()), 0.0)
    factors = np.zeros((values.shape[1], rank))
    factors[:, :used] = eigenvectors[:, :used] * np.sqrt(
        np.maximum(eigenvalues[:used] - discarded, 0.0))
    variance = np.diag(covariance)
    noise = np.maximum(variance - np.square(factors).sum(axis=1), NOISE_FLOOR * variance)
    return mean, factors, np.maximum(noise, MIN_NOISE)


def _check_shape(n_genes: int, n_types: int, rank: int) -> None:
    if n_genes < 2 or n_types < 1 or rank < 1:
        raise ScalelibError(f"a mixture needs at least 2 genes, 1 type and rank 1 (got V="
                            f"{n_genes}, K={n_types}, R={rank})")
    if rank >= n_genes:
        raise ScalelibError(f"the rank ({rank}) must be below the number of genes ({n_genes}); "
                            "choose a smaller rank (--mixture-rank, --rank)")


@dataclass(frozen=True)
class MaskedConditionals:
    """The conditional of each masked gene given its cell's unmasked genes.

    Attributes
    ----------
    mean, variance
        Posterior mean (the Bayes prediction) and variance at each masked position, in the
        row-major order of the mask.
    log2_density
        ``log2 p(x_j | x_O)`` at the realised value of each masked position.
    cell
        The row of each masked position.
    """

    mean: np.ndarray
    variance: np.ndarray
    log2_density: np.ndarray
    cell: np.ndarray


def masked_conditionals(mixture: GaussianMixture, values: np.ndarray,
                        mask: np.ndarray) -> MaskedConditionals:
    """Exact conditionals of the masked genes of each cell given its unmasked ones.

    Parameters
    ----------
    mixture
        The mixture the cells came from.
    values
        ``(n_cells, V)`` cells.
    mask
        ``(n_cells, V)`` boolean, True at masked positions (what a model must predict).
    """
    values = np.asarray(values, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if values.shape != mask.shape or values.shape[1] != mixture.n_genes:
        raise ScalelibError(f"values {values.shape} and mask {mask.shape} must both be "
                            f"(cells, {mixture.n_genes})")
    parts = [_chunk_conditionals(mixture, values[s:s + CHUNK_CELLS], mask[s:s + CHUNK_CELLS])
             for s in range(0, len(values), CHUNK_CELLS)]
    mean, variance, log_density = (np.concatenate([p[i] for p in parts]) for i in range(3))
    return MaskedConditionals(mean, variance, log_density / np.log(2.0),
                              np.nonzero(mask)[0])


def _chunk_conditionals(mixture: GaussianMixture, values: np.ndarray,
                        mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posterior mean, variance and log density (natural) at the masked positions of a chunk."""
    observed = (~mask).astype(np.float64)
    n, rank = len(values), mixture.rank
    eye = np.eye(rank)
    log_weight = np.empty((mixture.n_types, n))
    means = np.empty((mixture.n_types, int(mask.sum())))
    variances = np.empty_like(means)
    for k in range(mixture.n_types):
        factors, noise = mixture.factors[k], mixture.noise[k]
        outer = (factors[:, :, None] * factors[:, None, :]).reshape(mixture.n_genes, -1)
        precision = observed / noise  # D_O^-1, zero at masked genes
        a = eye + (precision @ outer).reshape(n, rank, rank)
        a_inv = np.linalg.inv(a)
        residual = values - mixture.means[k]
        b = (precision * residual) @ factors
        solved = np.einsum("nrs,ns->nr", a_inv, b)
        _, log_det = np.linalg.slogdet(a)
        quad = (precision * residual**2).sum(axis=1) - (b * solved).sum(axis=1)
        log_noise = (observed * np.log(noise)).sum(axis=1)
        log_weight[k] = np.log(mixture.weights[k]) - 0.5 * (
            quad + log_noise + log_det + observed.sum(axis=1) * LOG_2PI)
        means[k] = (mixture.means[k] + solved @ factors.T)[mask]
        variances[k] = (noise + a_inv.reshape(n, -1) @ outer.T)[mask]
    log_weight -= logsumexp(log_weight, axis=0)
    log_weight = log_weight[:, np.nonzero(mask)[0]]  # (K, masked positions)
    weight = np.exp(log_weight)
    mean = (weight * means).sum(axis=0)
    variance = (weight * (variances + (means - mean) ** 2)).sum(axis=0)
    log_components = -0.5 * (LOG_2PI + np.log(variances) + (values[mask] - means) ** 2 / variances)
    return mean, variance, logsumexp(log_weight + log_components, axis=0)


@dataclass(frozen=True)
class FloorEstimate:
    """The Bayes-optimal masked MSE and the conditional entropy of a masked gene, with errors.

    Attributes
    ----------
    mse, mse_se
        Mean squared error of the posterior-mean prediction over the masked positions, and its
        Monte Carlo standard error (cells as the independent units).
    bits, bits_se
        Mean of ``-log2 p(x_j | x_O)`` over the masked positions (bits per masked gene), and
        its standard error.
    n_cells, n_masked
        Cells and masked positions the estimate averages over.
    """

    mse: float
    mse_se: float
    bits: float
    bits_se: float
    n_cells: int
    n_masked: int

    def to_dict(self) -> dict:
        """All fields as a dictionary."""
        return asdict(self)


def masked_floor(mixture: GaussianMixture, values: np.ndarray, mask: np.ndarray) -> FloorEstimate:
    """Score the Bayes-optimal predictor on given cells and masks.

    The MSE is pooled as training pools it (squared errors of all masked positions over their
    number), from the realised errors, so it is directly comparable with a model scored on
    the same cells and masks.

    Parameters
    ----------
    mixture
        The mixture the cells came from.
    values
        ``(n_cells, V)`` cells, e.g. the validation split.
    mask
        ``(n_cells, V)`` boolean, True at the scored positions, e.g. the validation mask.
    """
    conditionals = masked_conditionals(mixture, values, mask)
    errors = np.square(np.asarray(values, dtype=np.float64)[mask] - conditionals.mean)
    return _pooled(errors, -conditionals.log2_density, conditionals.cell, len(values))


def expected_floor(mixture: GaussianMixture, mask_rate: float, *, n_cells: int = 20_000,
                   seed: int = 0) -> FloorEstimate:
    """The population floor: fresh cells and fresh masks at ``mask_rate``.

    The MSE averages the posterior variance (the expected squared error of the Bayes
    prediction given the unmasked genes, a Rao-Blackwellised estimate with less Monte Carlo
    noise than realised errors); the bits average ``-log2 p`` at the sampled values.

    Parameters
    ----------
    mixture
        The mixture.
    mask_rate
        Probability that a gene is masked.
    n_cells
        Monte Carlo cells.
    seed
        Seed of the cells and masks.
    """
    if not 0.0 < mask_rate < 1.0:
        raise ScalelibError(f"mask_rate must lie in (0, 1), got {mask_rate}")
    rng = np.random.default_rng(seed)
    values, _ = mixture.sample(n_cells, rng)
    mask = rng.random(values.shape) < mask_rate
    conditionals = masked_conditionals(mixture, values, mask)
    return _pooled(conditionals.variance, -conditionals.log2_density, conditionals.cell, n_cells)


def _pooled(squared: np.ndarray, bits: np.ndarray, cell: np.ndarray,
            n_cells: int) -> FloorEstimate:
    """Pooled means over masked positions with cluster (per-cell) standard errors."""
    count = np.bincount(cell, minlength=n_cells).astype(np.float64)
    if count.sum() == 0:
        raise ScalelibError("no masked position to score; use more cells or a higher mask rate")
    mse, mse_se = _ratio_mean(np.bincount(cell, squared, n_cells), count)
    mean_bits, bits_se = _ratio_mean(np.bincount(cell, bits, n_cells), count)
    return FloorEstimate(mse, mse_se, mean_bits, bits_se, n_cells, int(count.sum()))


def _ratio_mean(sums: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """``sum(sums) / sum(counts)`` and its delta-method standard error over cells."""
    total = counts.sum()
    ratio = sums.sum() / total
    n = len(sums)
    if n < 2:
        return float(ratio), float("nan")
    residual = sums - ratio * counts
    return float(ratio), float(np.sqrt(n / (n - 1) * np.square(residual).sum()) / total)
