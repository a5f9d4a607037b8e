"""When a run has converged: one rule on its validation curve, used to stop and to label runs.

The rule (``plateaued``): a run has converged when it has had at least ``min_evaluations``
validation scores and its best validation MSE improved by less than ``tol`` (relative) over the
last half of its evaluations (at least ``min_window`` of them)::

    window   = max(min_window, ceil(n * WINDOW_FRACTION))   # WINDOW_FRACTION = 1/2
    before   = min(val[: n - window])          # best score before the window
    best     = min(val)                        # best score so far
    improved = (before - best) / |before|      # relative improvement within the window
    converged = n >= min_evaluations and improved < tol

In words: "the second half of training bought less than ``tol``". Why half: when the loss falls
as a power of the steps, L(t) = L_inf + b t^-g, the gain of doubling a run's length,
b t^-g (1 - 2^-g), is smaller than what its last half bought, b t^-g (2^g - 1); so a run that
passes the rule would gain less than ``tol`` from twice the budget, which is what
``scalelib sweep --budget-check`` tests. A last-quarter window (the rule until December 2026)
promises less: its gain is about half that of a doubling, and on pbmc3k runs it called
converged still moved 2.1-2.7 % at twice the budget. Being relative to the run's own length,
the rule asks the same of a short and a long run. A fixed-budget run is labelled by the rule at
its end. In the ``converge`` budget mode the rule is checked after every evaluation while the
learning rate is flat; when it holds, the learning rate decays over a cool-down of
``cooldown_frac`` times the steps taken so far and the run stops (a warm-up, stable, decay
schedule), so that the budget in cells seen becomes an outcome of the run. A run that reaches
its cap first is labelled not converged.
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
        Evaluations in the window.
    """

    converged: bool
    improvement: float
    window: int


def plateaued(val_scores: Sequence[float], *, tol: float = CONVERGENCE_TOL,
              min_evaluations: int = MIN_EVALUATIONS, min_window: int = MIN_WINDOW) -> Plateau:
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
    improvement = (before - best) / abs(before) if before != 0 else 0.0  # bits can be negative
    return Plateau(improvement < tol, improvement, window)
