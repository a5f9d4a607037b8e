"""Resumable runs: the whole state of a training run saved at each evaluation, so that a run
killed mid-way goes on from its last evaluation instead of step 1.

:func:`scalelib.train.train` writes ``resume.pt`` into its output directory after every
validation pass except the last (atomically: a temporary file renamed into place) and deletes
it once ``best.pt`` and ``curve.parquet`` are written, so a finished run keeps no resume file.
It holds everything the rest of the run depends on: model and AdamW state, the best weights so
far with their score and the patience count, the convergence rule's scores and cool-downs (the
learning-rate schedule is a function of the step and the running cool-down; a run saved as a
cool-down branches off is saved with the stable run's weights), the step, the tallies
and curve so far, and the random streams: torch's default generator (dropout, and the seeds of
:mod:`scalelib.cpu_dropout`'s masks), the device's generator on an accelerator and the
training-mask generator. The data order is not stored: it is a seeded stream, and a resumed
run draws and skips the batches already trained on (cheap: it draws positions, not data).

Run on the same machine with the same library versions, a resumed run computes exactly what
an uninterrupted one does (tested bit for bit on a CPU). A resume file written for another
run (seed, size, config, data or torch/numpy version) is ignored, and a damaged one is
reported; either way the run starts from step 1. Loading uses ``torch.load(...,
weights_only=True)``: the file holds tensors and plain Python values only.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from scalelib.atomic import atomic_path

if TYPE_CHECKING:  # scalelib.train imports this module
    from scalelib.train import BestCheckpoint, Convergence

RESUME_NAME = "resume.pt"
FORMAT = 2  # 2: the converge mode's cool-downs (December 2026)


class ResumeWarning(UserWarning):
    """A resume file could not be used (damaged, or written for another run); the run starts
    from step 1."""


@dataclass
class SavedRun:
    """The state of a run after an evaluation, as loaded from its resume file.

    ``step`` is the last optimiser step taken (1-based); ``curve`` holds its rows so far.
    """

    step: int
    curve: list[dict]
    cells_seen: int
    masked_seen: int
    final_train_loss: float
    elapsed_s: float
    state: dict[str, Any]

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                best: BestCheckpoint, convergence: Convergence, mask_rng: torch.Generator,
                device: torch.device) -> None:
        """Put the saved state back into freshly built run objects.

        Parameters
        ----------
        model, optimizer
            The run's model and optimiser, as :func:`scalelib.train.train` builds them.
        best, convergence
            Its :class:`~scalelib.train.BestCheckpoint` and :class:`~scalelib.train.Convergence`.
        mask_rng
            The generator of the training masks.
        device
            The run's device (its generator is restored on an accelerator).
        """
        state = self.state
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        best.score, best.val_mse = state["best"]["score"], state["best"]["val_mse"]
        best.val_bits, best.step = state["best"]["val_bits"], state["best"]["step"]
        best.state = state["best"]["weights"]
        best.evaluations_since_best = state["best"]["evaluations_since_best"]
        convergence.scores = list(state["convergence"]["scores"])
        cooldown = state["convergence"]["cooldown"]
        convergence.cooldown = tuple(cooldown) if cooldown is not None else None
        convergence.cooldowns = [(int(stable), float(score))
                                 for stable, score in state["convergence"]["cooldowns"]]
        convergence.set_aside = int(state["convergence"]["set_aside"])
        convergence.doubling_gains = [float(g) for g in state["convergence"]["doubling_gains"]]
        torch.set_rng_state(state["rng"]["torch"])
        mask_rng.set_state(state["rng"]["mask"])
        if state["rng"]["device"] is not None:
            _set_device_rng_state(device, state["rng"]["device"])


class ResumeFile:
    """The resume file of one run: where it lives and which run may use it.

    Parameters
    ----------
    out_dir
        The run's output directory (None: a run that writes nothing saves nothing).
    identity
        What must match for a saved state to be resumed (see :func:`run_identity`).
    """

    def __init__(self, out_dir: str | Path | None, identity: dict[str, Any]) -> None:
        self.path = Path(out_dir) / RESUME_NAME if out_dir is not None else None
        self.identity = identity

    def load(self) -> SavedRun | None:
        """The saved state of this run, or None when there is none it can use.

        A file that cannot be read or lacks a field is reported (:class:`ResumeWarning`) and
        deleted, as is one written for another run; the run then starts from step 1.
        """
        if self.path is None or not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            if saved["identity"] != self.identity:
                self._discard("was written for another run or library version")
                return None
            names = saved["curve"]["columns"]
            curve = [dict(zip(names, row)) for row in zip(*saved["curve"]["values"])]
            tallies = saved["tallies"]
            run = SavedRun(int(saved["step"]), curve, int(tallies["cells_seen"]),
                           int(tallies["masked_seen"]), float(tallies["final_train_loss"]),
                           float(tallies["elapsed_s"]), saved)
        except Exception as error:  # noqa: BLE001  (any damage: truncated zip, bad pickle, missing key)
            self._discard(f"is damaged ({type(error).__name__}: {_first_line(error)})")
            return None
        if run.step != len(run.curve) or run.step < 1:
            self._discard("is damaged (its step and curve disagree)")
            return None
        return run

    def save(self, step: int, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             best: BestCheckpoint, convergence: Convergence, mask_rng: torch.Generator,
             device: torch.device, curve: list[dict], tallies: dict[str, float]) -> None:
        """Write the state after ``step`` (an evaluation step), replacing the previous one.

        Parameters
        ----------
        step
            The last optimiser step taken (1-based).
        model, optimizer, best, convergence, mask_rng, device
            The run's objects (see :meth:`SavedRun.restore`).
        curve
            The curve rows so far, one per step.
        tallies
            ``cells_seen``, ``masked_seen``, ``final_train_loss`` and ``elapsed_s``.
        """
        if self.path is None:
            return
        state = {
            "format": FORMAT,
            "identity": self.identity,
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "best": {"score": best.score, "val_mse": best.val_mse, "val_bits": best.val_bits,
                     "step": best.step, "weights": best.state,
                     "evaluations_since_best": best.evaluations_since_best},
            "convergence": {"scores": list(convergence.scores), "cooldown": convergence.cooldown,
                            "cooldowns": list(convergence.cooldowns),
                            "set_aside": convergence.set_aside,
                            "doubling_gains": list(convergence.doubling_gains)},
            "rng": {"torch": torch.get_rng_state(), "mask": mask_rng.get_state(),
                    "device": _device_rng_state(device)},
            "curve": {"columns": list(curve[0]),
                      "values": [[row[name] for row in curve] for name in curve[0]]},
            "tallies": dict(tallies),
        }
        with atomic_path(self.path) as temporary:
            torch.save(state, temporary)

    def remove(self) -> None:
        """Delete the resume file (the run finished), and temporary files of a killed save."""
        if self.path is None:
            return
        self.path.unlink(missing_ok=True)
        for leftover in self.path.parent.glob(f".{RESUME_NAME}.*"):
            leftover.unlink(missing_ok=True)

    def _discard(self, why: str) -> None:
        warnings.warn(f"resume file {self.path} {why}; training this run from step 1",
                      ResumeWarning, stacklevel=3)
        self.remove()


def run_identity(*, fingerprint: str, n_genes: int, size: dict, config: dict, seed: int,
                 n_train: int | None, device: torch.device, dtype: str) -> dict[str, Any]:
    """What a saved state must match to be resumed: the run (data, shape, settings, seed,
    training-set size), where and in which precision it computes, and the torch and numpy
    versions (their random streams and kernels decide the numbers).

    Parameters
    ----------
    fingerprint, n_genes
        The dataset's fingerprint and vocabulary size.
    size, config
        The model shape and training configuration as dictionaries.
    seed, n_train
        Run seed and training-subset size.
    device, dtype
        Resolved device and precision.
    """
    return {"format": FORMAT, "dataset": fingerprint, "n_genes": n_genes, "size": size,
            "config": config, "seed": seed, "n_train": n_train, "device": device.type,
            "dtype": dtype, "torch": str(torch.__version__), "numpy": str(np.__version__)}


def _device_rng_state(device: torch.device) -> torch.Tensor | None:
    getter: Callable[[], torch.Tensor] | None = {
        "cuda": lambda: torch.cuda.get_rng_state(device),
        "mps": lambda: torch.mps.get_rng_state(),
    }.get(device.type)
    return getter() if getter is not None else None


def _set_device_rng_state(device: torch.device, state: torch.Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    elif device.type == "mps":
        torch.mps.set_rng_state(state)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else "no message"

