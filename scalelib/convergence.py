"""When a run has converged: a rule on the validation curve of a fixed-budget run, and in the
``converge`` budget mode a test on cooled-down models.

The rule (``plateaued``) labels a fixed-budget run at its end: it has converged when it has had at least ``min_evaluations``
validation scores and its best validation MSE improved by less than ``tol`` (relative) over the
last half of its evaluations (at least ``min_window`` of them)::

    window   = max(min_window, ceil(n * WINDOW_FRACTION))   # WINDOW_FRACTION = 1/2
    before   = min(val[: n - window])          # best score before the window
    best     = min(val)                        # best score so far
    improved = (before - best) / |before|      # relative improvement within the window
    converged = n >= min_evaluations and improved < tol
                and best_mse < mean_predictor_mse * (1 - tol)   # left the mean predictor

In words: "the second half of training bought less than ``tol``". Why half: when the loss falls
as a power of the steps, L(t) = L_inf + b t^-g, the gain of doubling a run's length,
b t^-g (1 - 2^-g), is smaller than what its last half bought, b t^-g (2^g - 1); so a run that
passes the rule would gain less than ``tol`` from twice the budget, which is what
``scalelib sweep --budget-check`` tests. A last-quarter window (the rule until December 2026)
promises less: its gain is about half that of a doubling, and on pbmc3k runs it called
converged still moved 2.1-2.7 % at twice the budget. Being relative to the run's own length,
the rule asks the same of a short and a long run. A fixed-budget run is labelled by the rule at
its end.

A second condition guards the start of a run: given the validation MSE of the per-gene mean
predictor on the same masks, a run whose best MSE is not below it by more than ``tol``
(relative) has not converged, however flat its curve. Such a run has shown that it has not
started learning, not that it has stopped: on an 8-type, 32-gene calibration mixture (the
smoke preset until December 2026) every size sits on the mean predictor's plateau for its
first 10-20k cells and then falls by a third, so the doubling argument above, which assumes a curve that is already falling, does not hold there.
A model that never beats the mean predictor runs to its cap and is labelled not converged
("compute ran out"), beside a baseline that beats it ("loses to a baseline").

In the ``converge`` budget mode the rule plays no part: at a flat learning rate a curve also
pauses at the rate's noise level, and a pause is not a floor (on kang8 a run the rule stopped
at 480 steps cooled down to 2.304; a run of 625 steps with a decaying rate reached 2.089), and
a slow drift at the flat rate can keep the rule from holding long after cooled-down models
have stopped improving (kang8 D3 on 888 cells: cooled 2.042 at 2,232 steps and 2.047 at
8,160, where the rule first held at 6,800). The mode tests the claim itself, on cooled-down
models, as in warm-up/stable/decay schedules whose decays branch off one stable run:

1. At ``t0`` steps of the stable (flat-rate) run, after the warm-up, a *cool-down* branches
   off: the rate decays linearly to ``min_lr_ratio`` times the peak over ``cooldown_frac * t0``
   steps and the cooled model is scored.
2. The stable run goes on from where the cool-down branched (the cooled weights are put
   aside) until ``2 t0`` steps, where the next cool-down branches off, then ``4 t0``, ... up to
   ``2^K t0``: ``doubling_schedule`` picks ``t0`` and ``K`` so that the last cool-down ends at
   the budget, the largest doubling the budget can test.
3. The run has converged, and ends with that cool-down, when a cool-down's score improves on
   the previous one's by less than ``tol`` (``relative_gain``) and it has left the mean
   predictor: doubling the steps measurably bought less than ``tol`` (what ``scalelib sweep
   --budget-check`` asks of a finished run, at twice its cost).
4. A run whose last scheduled cool-down still gained ``tol`` or more ends with it, labelled
   not converged: its budget ran out.

A run that converges with the cool-down at ``T`` stable steps has cost ``T`` plus all its
cool-downs, ``cooldown_frac * (T + T/2 + T/4 + ...)``: under ``(1 + 2 * cooldown_frac) T``
(``1.4 T`` at the default 0.2), whatever ``t0``. The put-aside cool-downs count in the run's
``steps`` and ``cells_seen`` (compute spent) and are marked in its curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CONVERGENCE_TOL = 0.01
MIN_EVALUATIONS = 4
MIN_WINDOW = 2
WINDOW_FRACTION = 0.5  # the last half of the evaluations: see the module docstring


@dataclass(frozen=True)
class Plateau:
    """The convergence rule's verdict on a validation curve.

    Parameters
    ----------
    converged
        Whether the rule holds.
    improvement
        Relative improvement of the best score over the window (NaN with too few scores).
    window
        Evaluations in the window (2 for the ``converge`` mode's comparison of two
        cool-downs).
    left_mean_predictor
        Whether the best MSE is below the per-gene mean predictor's by more than the tolerance
        (True when no mean predictor was given).
    """

    converged: bool
    improvement: float
    window: int
    left_mean_predictor: bool = True


def plateaued(val_scores: Sequence[float], *, tol: float = CONVERGENCE_TOL,
              min_evaluations: int = MIN_EVALUATIONS, min_window: int = MIN_WINDOW,
              best_mse: float | None = None, mean_predictor_mse: float | None = None) -> Plateau:
    """Apply the convergence rule (module docstring) to validation scores in step order.

    Parameters
    ----------
    val_scores
        Validation MSEs, one per evaluation; non-finite scores are ignored.
    tol
        Largest relative improvement over the window that still counts as converged.
    min_evaluations
        Fewer finite scores than this are never converged.
    min_window
        Smallest window, in evaluations.
    best_mse, mean_predictor_mse
        The run's best validation MSE and that of the per-gene mean predictor on the same
        masks; when both are given, a run not below the mean predictor by more than ``tol`` is
        not converged (module docstring). For a likelihood objective the scores are bits and
        ``best_mse`` is the MSE of the best-scoring evaluation.

    Returns
    -------
    Plateau
        The verdict, the improvement and the window it was measured over.
    """
    scores = [float(v) for v in val_scores if v is not None and math.isfinite(v)]
    n = len(scores)
    window = max(min_window, math.ceil(n * WINDOW_FRACTION))
    if n < max(min_evaluations, window + 1):
        return Plateau(False, math.nan, window)
    before = min(scores[: n - window])
    best = min(scores)
    improvement = relative_gain(before, best)
    left = left_mean_predictor(best_mse, mean_predictor_mse, tol=tol)
    return Plateau(improvement < tol and left, improvement, window, left)


def left_mean_predictor(best_mse: float | None, mean_predictor_mse: float | None, *,
                        tol: float = CONVERGENCE_TOL) -> bool:
    """Whether a run's best validation MSE beats the per-gene mean predictor's by more than
    ``tol`` (relative); True when either is unknown.

    Parameters
    ----------
    best_mse
        The run's best validation MSE.
    mean_predictor_mse
        The per-gene mean predictor's validation MSE on the same cells and masks.
    tol
        Relative margin.
    """
    if best_mse is None or mean_predictor_mse is None or not math.isfinite(mean_predictor_mse):
        return True
    return best_mse < mean_predictor_mse * (1.0 - tol)


def relative_gain(previous: float, current: float) -> float:
    """Relative improvement of a validation score over an earlier one (positive: it fell).

    Used for the rule's window, and in the ``converge`` mode for a cool-down's score against
    the previous cool-down's, branched off at half the steps.

    Parameters
    ----------
    previous, current
        Validation scores (MSE, or bits for a likelihood objective, which can be negative:
        hence the absolute value).
    """
    return (previous - current) / abs(previous) if previous != 0 else 0.0


def doubling_schedule(total_steps: int, warmup_steps: int, cooldown_frac: float) -> list[int]:
    """Steps of the stable (flat-rate) run at which the ``converge`` mode's cool-downs branch
    off: ``t0, 2 t0, ..., 2^K t0``, with the most doublings ``K`` for which ``t0`` lies after
    the warm-up and the whole sequence, every cool-down included, fits in ``total_steps``.

    Anchoring the last cool-down at the end of the budget (rather than the first at the end of
    the warm-up) makes the largest doubling tested as large as the budget allows: with the
    first anchored at a warm-up of 5 % of the cap, the last whole doubling compared 0.2 and 0.4
    of the cap and the rest of it went to a cool-down cut short.

    Parameters
    ----------
    total_steps
        The budget in optimiser steps.
    warmup_steps
        Steps of the warm-up (no cool-down branches off during it).
    cooldown_frac
        Each cool-down's length as a fraction of the stable steps it branches at.

    Returns
    -------
    list of int
        Branch points, doubling; one point when the budget leaves no room for a doubling.
    """
    for doublings in range(max(1, total_steps).bit_length(), -1, -1):
        cost_per_t0 = 2**doublings + cooldown_frac * (2 ** (doublings + 1) - 1)
        first = (total_steps - (doublings + 1)) // cost_per_t0  # +1 per cool-down: ceil
        if first > warmup_steps or doublings == 0:
            return [max(1, int(first)) * 2**k for k in range(doublings + 1)]
    raise AssertionError("unreachable: the loop returns at doublings == 0")
