"""Training objectives of the masked-reconstruction model: what its head predicts and how it
is scored.

- ``mse``: one value per gene, the normalised log1p expression; loss the squared error (the
  reference study's objective).
- ``gaussian``: a heteroscedastic Gaussian on the normalised log1p value, mean and variance
  per masked gene; loss the negative log-likelihood (NLL) of the value.
- ``nb``: a negative binomial on the raw count of a masked gene, mean ``library * exp(o) / V``
  (``library``: the cell's total count over the vocabulary, the size factor the input was
  normalised by; ``V`` the number of genes, so an untrained head predicts an average gene)
  and a dispersion predicted per cell and gene; loss the NLL of the count.
- ``nb_gene``: the same negative binomial with one dispersion per gene, learned as a parameter
  of the model and shared by all cells (scVI's ``dispersion="gene"``): the mean is predicted,
  the dispersion is not.

All three take the same input (normalised values with masked positions hidden) and every
objective reports the squared error of a point prediction on the normalised scale, so rows stay
comparable: the Gaussian's mean, and for the negative binomial the expected normalised value
``E[log1p(target_sum * k / library)]`` under the predicted distribution (not the plug-in
``log1p(target_sum * mean / library)``, which Jensen's inequality biases upwards).

Bits per masked gene are the mean NLL over masked positions divided by ``ln 2``. For counts
they are a Shannon entropy (cross-entropy) and well defined. For the Gaussian they are a
*differential* entropy of log1p values, which is ill-posed here: a masked value is exactly 0
with positive probability (no count), a point mass whose differential entropy is minus
infinity, so the NLL can fall without bound by shrinking the variance at zeros. The head's
variance is floored at :data:`MIN_VARIANCE`, which bounds the NLL from below and makes the
figure depend on that floor; it is reported because the reference study's conversion
``0.5 log2(2 pi e c)`` rests on the same Gaussian reading, not because it is an entropy of the
data. The library size counts the masked genes too (as the normalisation of the input does, so
both heads see the same information: the visible normalised values already fix the sum of the
masked ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from scalelib.config import OBJECTIVES
from scalelib.errors import ScalelibError

HEAD_OUTPUTS = {"mse": 1, "gaussian": 2, "nb": 2, "nb_gene": 1}  # predicted per cell and gene
GENE_OUTPUTS = {"mse": 0, "gaussian": 0, "nb": 0, "nb_gene": 1}  # learned once per gene
COUNT_OBJECTIVES = ("nb", "nb_gene")  # objectives scored on raw counts
MIN_VARIANCE = 1e-3  # floor of the Gaussian head's variance (log1p scale)
MIN_DISPERSION = 1e-4  # floor of the negative binomial's inverse dispersion theta
MAX_COUNT_GRID = 4096  # largest count summed over for the negative binomial's expected value


@dataclass(frozen=True)
class Targets:
    """What a batch is scored against.

    Parameters
    ----------
    values
        Normalised log1p expression, shape ``(cells, genes)``.
    counts
        Raw counts behind ``values`` (float tensor, same shape); needed by the negative binomials only.
    target_sum
        The total each cell was normalised to (``values = log1p(target_sum * counts /
        library)``); needed by the negative binomials only.
    """

    values: torch.Tensor
    counts: torch.Tensor | None = None
    target_sum: float | None = None

    @property
    def library(self) -> torch.Tensor:
        """Library size per cell, shape ``(cells, 1)``: the row sums of ``counts``."""
        return self.counts.sum(dim=-1, keepdim=True)


def check_objective(objective: str) -> str:
    """Return ``objective`` when it is known; a clear error otherwise."""
    if objective not in OBJECTIVES:
        raise ScalelibError(f"unknown objective {objective!r}; choose {', '.join(OBJECTIVES)}")
    return objective


def uses_counts(objective: str) -> bool:
    """Whether an objective scores raw counts (and so needs a dataset that keeps them)."""
    return check_objective(objective) in COUNT_OBJECTIVES


def is_likelihood(objective: str) -> bool:
    """Whether an objective trains by NLL (and so reports bits per masked gene)."""
    return check_objective(objective) != "mse"


def gaussian_parameters(outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of the Gaussian head from its two outputs per gene.

    Parameters
    ----------
    outputs
        Head outputs, shape ``(..., 2)``: mean and an unconstrained variance parameter.
    """
    return outputs[..., 0], F.softplus(outputs[..., 1]) + MIN_VARIANCE


def nb_parameters(outputs: torch.Tensor, library: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and inverse dispersion ``theta`` of the negative-binomial head.

    Parameters
    ----------
    outputs
        Head outputs, shape ``(cells, genes, 2)``: log fraction (times V) and an unconstrained
        dispersion parameter (for ``nb_gene`` the model's per-gene parameter, repeated over
        cells).
    library
        Library size per cell, shape ``(cells, 1)``.
    """
    n_genes = outputs.shape[-2]
    mean = library * torch.exp(outputs[..., 0].clamp(max=30.0)) / n_genes
    return mean, F.softplus(outputs[..., 1]) + MIN_DISPERSION


def negative_binomial(mean: torch.Tensor, theta: torch.Tensor) -> torch.distributions.NegativeBinomial:
    """A torch negative binomial with the given mean and inverse dispersion
    (variance ``mean + mean^2 / theta``)."""
    logits = torch.log(mean.clamp(min=1e-12)) - torch.log(theta)
    return torch.distributions.NegativeBinomial(total_count=theta, logits=logits,
                                                validate_args=False)


def nll_nats(objective: str, outputs: torch.Tensor, targets: Targets) -> torch.Tensor:
    """Negative log-likelihood (nats) of every position, shape ``(cells, genes)``.

    Parameters
    ----------
    objective
        ``"gaussian"``, ``"nb"`` or ``"nb_gene"``.
    outputs
        Head outputs, shape ``(cells, genes, 2)``.
    targets
        Values (and for ``nb`` counts) of the batch.
    """
    outputs = outputs.float()
    if objective == "gaussian":
        mean, variance = gaussian_parameters(outputs)
        return 0.5 * (torch.log(2 * math.pi * variance)
                      + (targets.values.float() - mean).square() / variance)
    if objective in COUNT_OBJECTIVES:
        mean, theta = nb_parameters(outputs, targets.library)
        return -negative_binomial(mean, theta).log_prob(targets.counts)
    raise ScalelibError(f"objective {objective!r} has no likelihood; choose gaussian, nb or "
                        "nb_gene")


def training_loss(objective: str, outputs: torch.Tensor, targets: Targets,
                  mask: torch.Tensor, masked_positions: float | None = None) -> torch.Tensor:
    """The loss a step minimises: mean squared error or mean NLL over masked positions.

    Parameters
    ----------
    objective
        One of :data:`OBJECTIVES`.
    outputs
        Head outputs: ``(cells, genes)`` for ``mse``, ``(cells, genes, 2)`` otherwise.
    targets
        What the batch is scored against.
    mask
        Boolean, True at the masked positions.
    masked_positions
        What the summed losses are divided by (default: the number of masked positions; a
        data-parallel rank passes its share of the whole batch's number).
    """
    if objective == "mse":
        losses = (outputs.float() - targets.values)[mask].square()
    else:
        losses = nll_nats(objective, outputs, targets)[mask]
    return losses.mean() if masked_positions is None else losses.sum() / masked_positions


def point_prediction(objective: str, outputs: torch.Tensor, targets: Targets,
                     mask: torch.Tensor) -> torch.Tensor:
    """The prediction on the normalised scale at the masked positions, shape ``(n_masked,)``.

    Parameters
    ----------
    objective
        One of :data:`OBJECTIVES`.
    outputs
        Head outputs.
    targets
        Library sizes and ``target_sum`` for the negative binomials.
    mask
        Boolean, True at the masked positions.
    """
    outputs = outputs.float()
    if objective == "mse":
        return outputs[mask]
    if objective == "gaussian":
        return outputs[..., 0][mask]
    mean, theta = nb_parameters(outputs, targets.library)
    library = targets.library.expand_as(mean)
    return expected_log1p(mean[mask], theta[mask], targets.target_sum / library[mask])


def expected_log1p(mean: torch.Tensor, theta: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``E[log1p(scale * K)]`` for ``K`` negative binomial, by summing its probabilities.

    The sum runs over counts ``0..K_max`` with ``K_max`` twelve standard deviations above the
    mean (at most :data:`MAX_COUNT_GRID`); the probability beyond it is put at ``K_max``.
    Positions are taken in order of ``K_max``, in chunks, so each chunk sums over a grid no
    longer than its own largest ``K_max``.

    Parameters
    ----------
    mean, theta
        Negative-binomial mean and inverse dispersion, shape ``(n,)``.
    scale
        Factor of each count inside the log, shape ``(n,)`` (``target_sum / library``).
    """
    reach = (mean + 12 * torch.sqrt(mean + mean.square() / theta)).clamp(max=MAX_COUNT_GRID)
    order = torch.argsort(reach)
    out = torch.empty_like(mean)
    chunk = 4096
    for start in range(0, len(mean), chunk):
        index = order[start:start + chunk]
        top = math.ceil(float(reach[index].max())) + 16
        grid = torch.arange(min(top, MAX_COUNT_GRID) + 1, dtype=mean.dtype,
                            device=mean.device).unsqueeze(-1)
        probs = negative_binomial(mean[index], theta[index]).log_prob(grid).exp()  # (K + 1, n)
        probs[-1] = (1.0 - probs[:-1].sum(dim=0)).clamp(min=0.0)
        out[index] = (probs * torch.log1p(scale[index] * grid)).sum(dim=0)
    return out
