"""Calibration: fit the scaling law where the answer is known, and compare.

``scalelib calibrate`` samples a dataset from a Gaussian mixture whose masked-reconstruction
floor is exact (:mod:`scalelib.data.floor_dataset`), trains a ladder on it to convergence (the
``converge`` budget mode), fits ``L = a P^-alpha + c`` by both methods and sets side by side:

- the fitted ``c`` of each method, its interval and status, against the true floor (the
  Bayes-optimal MSE on the validation cells under the validation mask, the exact task the
  models are scored on) with its Monte Carlo standard error;
- the best model's validation MSE, which can never beat the floor beyond the floor's error
  bar (``FLOOR_Z`` standard errors): if it does, something is wrong (a leak from masked
  values, a mismatch of masks), and the command says so loudly and exits 1;
- ``0.5 log2(2 pi e c)``, the Gaussian reading of each ``c`` in bits, against the true
  conditional entropy of a masked gene (``-E log2 p(x_j | unmasked genes)``, exact for the
  mixture), and the Gaussian reading of the true floor itself, which separates the error of
  the Gaussian assumption from the error of the fitted ``c``;
- ridge regression's validation MSE on the same cells and masks (:mod:`scalelib.baselines`);
- the bits measured directly: the same ladder trained with the heteroscedastic Gaussian head
  (``--objective gaussian``, :mod:`scalelib.objectives`), whose validation NLL in bits per
  masked gene is a cross-entropy of the same stored values on the same validation cells and
  masks as the true bits (no standardisation anywhere between ``X`` and the head), so it can
  never fall below them beyond their error bar either; with its fitted floor (``L = a P^-alpha
  + c`` in bits, both methods). The mixture has no point mass at zero, so here, unlike on log1p
  values of real counts, the head's bits are a well-defined upper bound on a differential
  entropy.

Output directory (default ``data/calibrate/<preset>``): ``datasets/<name>/`` (the mixture
dataset, reused when its settings match), ``runs/``, ``results.parquet``, ``fits.json`` and
``calibration.json`` (what ``--json`` prints). ``fits.json`` holds the MSE fits; the fits of the
Gaussian head's bits are in ``calibration.json`` under ``gaussian_head_bits``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from scalelib.atomic import atomic_path, json_ready
from scalelib.config import CALIBRATION_PRESETS, CalibrationPreset, get_ladder, select_sizes
from scalelib.data.floor_dataset import (
    mixture_dataset,
    mixture_from_data,
    mixture_from_simulator,
)
from scalelib.data.store import ExpressionDataset, is_dataset_dir, load_dataset
from scalelib.errors import ScalelibError
from scalelib.locks import file_lock
from scalelib.results import read_results
from scalelib.scaling import (
    METHODS,
    PowerLawFit,
    baseline_rows,
    entropy_bits,
    fit_groups,
    matching_baselines,
    transformer_rows,
    write_fits,
)
from scalelib.sweep import check_sweep_dir, plan_runs
from scalelib.workers import run_with_workers

FLOOR_Z = 1.96  # the floor's error bar: this many Monte Carlo standard errors
HEAD_OBJECTIVE = "gaussian"  # the likelihood head trained beside the MSE ladder
SUMMARY_FILE = "calibration.json"


@dataclass(frozen=True)
class MixtureSpec:
    """How the calibration data are made (recorded in the dataset's provenance)."""

    preset: str
    n_genes: int
    n_cells: int
    n_types: int
    rank: int
    seed: int
    fit_to: str | None
    labels: str

    def as_dict(self) -> dict:
        """The fields as a plain dictionary."""
        return asdict(self)


@dataclass(frozen=True)
class Calibration:
    """What a calibration found (:meth:`to_dict` is the ``--json`` output)."""

    preset: str
    dataset: ExpressionDataset
    results: pl.DataFrame
    fits: list[PowerLawFit]
    head_fits: list[PowerLawFit]
    ridge_val_mse: float
    wall_time_s: float

    @property
    def floor(self) -> dict:
        """The dataset manifest's ``bayes_floor``."""
        return self.dataset.manifest["bayes_floor"]

    @property
    def best_run(self) -> dict:
        """The MSE-trained transformer run with the lowest validation MSE."""
        return _finished(self.results, "mse").sort("best_val_mse").row(0, named=True)

    @property
    def best_head_run(self) -> dict | None:
        """The Gaussian-head run with the lowest validation bits (None: none finished)."""
        runs = _finished(self.results, HEAD_OBJECTIVE)
        return runs.sort("best_val_bits").row(0, named=True) if runs.height else None

    @property
    def floor_beaten(self) -> bool:
        """True when the best model beats the true floor by more than its error bar."""
        val = self.floor["val"]
        return self.best_run["best_val_mse"] < val["mse"] - FLOOR_Z * val["mse_se"]

    @property
    def entropy_beaten(self) -> bool:
        """True when the Gaussian head's bits fall below the true bits by more than their error
        bar (a cross-entropy cannot fall below the entropy)."""
        head, val = self.best_head_run, self.floor["val"]
        return head is not None and head["best_val_bits"] < val["bits"] - FLOOR_Z * val["bits_se"]

    def to_dict(self) -> dict:
        """The calibration as JSON-ready data (the keys ``scalelib calibrate --json`` prints)."""
        val, expected = self.floor["val"], self.floor["expected"]
        best = self.best_run
        runs = transformer_rows(self.results).filter(pl.col("objective") == "mse")
        return json_ready({
            "preset": self.preset,
            "dataset": self.dataset.manifest.get("path"),
            "true_floor_mse": val["mse"],
            "true_floor_se": val["mse_se"],
            "true_bits": val["bits"],
            "true_bits_se": val["bits_se"],
            "expected_floor_mse": expected["mse"],
            "expected_floor_se": expected["mse_se"],
            "expected_bits": expected["bits"],
            "expected_bits_se": expected["bits_se"],
            "best_val_mse": best["best_val_mse"],
            "best_size": best["size"],
            "floor_beaten": self.floor_beaten,
            "fitted_c": {fit.method: _fitted_c(fit) for fit in self.fits},
            "gaussian_bits_from_c": {fit.method: fit.bits for fit in self.fits},
            "gaussian_bits_from_true_floor": entropy_bits(val["mse"]),
            "ridge_val_mse": self.ridge_val_mse,
            "gaussian_head_bits": self._head_summary(),
            "entropy_beaten": self.entropy_beaten,
            "runs": runs.height,
            "converged": int(runs["converged"].sum()),
            "wall_time_s": self.wall_time_s,
        })


    def _head_summary(self) -> dict | None:
        """The Gaussian head's best bits, its fitted floor in bits and the gaps to the truth."""
        head = self.best_head_run
        if head is None:
            return None
        runs = transformer_rows(self.results).filter(pl.col("objective") == HEAD_OBJECTIVE)
        true_bits = self.floor["val"]["bits"]
        return {
            "best_val_bits": head["best_val_bits"],
            "best_size": head["size"],
            "best_val_mse": head["best_val_mse"],
            "above_true_bits": head["best_val_bits"] - true_bits,
            "fitted_floor": {fit.method: _fitted_c(fit, bits=False) for fit in self.head_fits},
            "runs": runs.height,
            "converged": int(runs["converged"].sum()),
        }


def _finished(results: pl.DataFrame, objective: str) -> pl.DataFrame:
    """Finished transformer runs of one objective."""
    return transformer_rows(results).filter(
        (pl.col("status") == "ok") & (pl.col("objective").fill_null("mse") == objective))


def _fitted_c(fit: PowerLawFit, *, bits: bool = True) -> dict:
    interval = (fit.ci or {}).get("c")
    fitted = {"c": fit.c, "ci": list(interval) if interval else None, "ci_level": fit.ci_level,
              "status": fit.status, "alpha": fit.alpha, "r2_log": fit.r2_log}
    if bits:  # the Gaussian reading of an MSE floor
        fitted["bits_ci"] = list((fit.ci or {}).get("bits") or []) or None
    return fitted


def run_calibration(
    out_dir: str | Path,
    *,
    preset: str = "smoke",
    fit_to: str | Path | None = None,
    n_types: int | None = None,
    rank: int | None = None,
    labels: str = "cell_type",
    seed: int = 0,
    progress: bool = True,
    workers: int = 1,
) -> Calibration:
    """Simulate (or reuse) the mixture dataset, train the preset's ladder to convergence, fit.

    Parameters
    ----------
    out_dir
        Output directory (see the module docstring).
    preset
        ``"smoke"`` or ``"demo"`` (:data:`scalelib.config.CALIBRATION_PRESETS`).
    fit_to
        Fit the mixture to this dataset directory, ``.h5ad`` file or 10x directory (default:
        cells of the count simulator, :func:`mixture_from_simulator`).
    n_types, rank
        Cell types of the count simulator (or clusters of unlabelled data), programs per type
        (default: the preset's).
    labels
        Obs column of cell types of the ``fit_to`` data.
    seed
        Seed of the mixture, the dataset and the runs.
    progress
        Show progress bars.
    workers
        Processes training runs at once on this machine (see :mod:`scalelib.workers`).
    """
    started = time.perf_counter()
    chosen = _preset(preset)
    out_dir = check_sweep_dir(out_dir)
    spec = MixtureSpec(preset, chosen.n_genes, chosen.n_cells,
                       chosen.n_types if n_types is None else n_types,
                       chosen.rank if rank is None else rank, seed,
                       None if fit_to is None else str(fit_to), labels)
    dataset = calibration_dataset(spec, out_dir / "datasets")
    floor = dataset.manifest["bayes_floor"]
    config = chosen.train
    if (config.mask_rate, config.eval_mask_seed) != (floor["mask_rate"], floor["eval_mask_seed"]):
        raise ScalelibError("the dataset's floor was computed under other evaluation masks; "
                            "delete its folder to rebuild it")
    sizes = select_sizes(get_ladder(chosen.ladder), list(chosen.sizes))
    runs = [*plan_runs(dataset, sizes, config, seeds=[seed]),
            *plan_runs(dataset, sizes, config.with_(objective=HEAD_OBJECTIVE), seeds=[seed])]
    results = run_with_workers(runs, out_dir, workers, progress=progress)
    if _finished(results, "mse").height == 0:
        raise ScalelibError(f"no MSE run finished; see the failures in "
                            f"{out_dir / 'results.parquet'}")
    baselines = baseline_rows(read_results(out_dir / "results.parquet"))
    fits = fit_groups(_finished(results, "mse"), by=("regime",), methods=METHODS,
                      n_bootstrap=chosen.n_bootstrap, baselines=baselines)
    write_fits(fits, out_dir / "fits.json")
    heads = _finished(results, HEAD_OBJECTIVE)
    head_fits = (fit_groups(heads, y="best_val_bits", by=("regime",), methods=METHODS,
                            n_bootstrap=chosen.n_bootstrap) if heads.height else [])
    matched = matching_baselines(results, baselines)
    ridge = matched.filter(pl.col("model_family") == "ridge")["best_val_mse"]
    calibration = Calibration(preset, dataset, results, fits, head_fits,
                              float(ridge[0]) if len(ridge) else float("nan"),
                              time.perf_counter() - started)
    with atomic_path(out_dir / SUMMARY_FILE) as path:
        path.write_text(json.dumps(calibration.to_dict(), indent=1, allow_nan=False))
    return calibration


def _preset(name: str) -> CalibrationPreset:
    if name not in CALIBRATION_PRESETS:
        raise ScalelibError(f"unknown calibration preset {name!r}; choose one of "
                            f"{', '.join(CALIBRATION_PRESETS)}")
    return CALIBRATION_PRESETS[name]


def calibration_dataset(spec: MixtureSpec, datasets_dir: Path) -> ExpressionDataset:
    """Open the mixture dataset of ``spec`` under ``datasets_dir``, or build and write it.

    Parameters
    ----------
    spec
        How the data are made; a dataset there made otherwise is refused, not replaced.
    datasets_dir
        Folder of the calibration's datasets.
    """
    path = datasets_dir / ("mixture" if spec.fit_to is None else "mixture-fitted")
    with file_lock(datasets_dir / f".{path.name}.lock"):
        if not is_dataset_dir(path):
            _build(spec).write(path, overwrite=True)
    dataset = load_dataset(path)
    made_with = dataset.manifest.get("provenance", {}).get("calibration")
    if made_with != spec.as_dict():
        raise ScalelibError(f"{path} was made with other settings ({made_with}); choose "
                            "another --out or delete that folder")
    return dataset


def _build(spec: MixtureSpec) -> ExpressionDataset:
    if spec.fit_to is None:
        fitted = mixture_from_simulator(spec.n_genes, n_types=spec.n_types, rank=spec.rank,
                                        seed=spec.seed)
    else:
        fitted = mixture_from_data(spec.fit_to, n_genes=spec.n_genes, n_types=spec.n_types,
                                   rank=spec.rank, labels=spec.labels, seed=spec.seed)
    return mixture_dataset(fitted.mixture, spec.n_cells, seed=spec.seed,
                           regime="mixture" if spec.fit_to is None else "mixture-fitted",
                           gene_names=fitted.gene_names, gene_ids=fitted.gene_ids,
                           provenance={**fitted.provenance, "calibration": spec.as_dict()})


def print_calibration(calibration: Calibration) -> None:
    """Print the side-by-side comparison, and a loud warning when the floor is beaten."""
    summary = calibration.to_dict()
    manifest = calibration.dataset.manifest
    mixture, val = manifest["mixture"], calibration.floor["val"]
    print(f"calibration ({calibration.preset}): a mixture of {mixture['n_types']} types, rank "
          f"{mixture['rank']}, V = {mixture['n_genes']} genes, fitted to "
          f"{manifest['provenance'].get('fit_to')}; "
          f"{summary['converged']} of {summary['runs']} runs converged")
    print(f"{'':<34}{'MSE':<44}bits per masked gene")
    print(f"{'true floor (Bayes, val masks)':<34}{_pm(val['mse'], val['mse_se']):<44}"
          f"{_pm(val['bits'], val['bits_se'])} (exact conditional density)")
    expected = calibration.floor["expected"]
    print(f"{'  population (fresh cells)':<34}{_pm(expected['mse'], expected['mse_se']):<44}"
          f"{_pm(expected['bits'], expected['bits_se'])}")
    for fit in calibration.fits:
        c = summary["fitted_c"][fit.method]
        bits = _num(summary["gaussian_bits_from_c"][fit.method], 3) + _interval(c["bits_ci"], 3)
        print(f"{'fitted c, ' + fit.method:<34}"
              f"{_num(c['c'], 4) + _interval(c['ci'], 4) + f' ({fit.status})':<44}{bits} "
              "(0.5 log2(2 pi e c))")
    print(f"{'best model (' + summary['best_size'] + ')':<34}{_num(summary['best_val_mse'], 4)}")
    print(f"{'ridge baseline':<34}{_num(summary['ridge_val_mse'], 4)}")
    print(f"{'Gaussian reading of the floor':<34}{'':<44}"
          f"{summary['gaussian_bits_from_true_floor']:.3f} (0.5 log2(2 pi e floor))")
    head = summary["gaussian_head_bits"]
    if head is not None:
        print(f"{'Gaussian head (' + head['best_size'] + ')':<34}"
              f"{_num(head['best_val_mse'], 4) + ' (its mean)':<44}"
              f"{head['best_val_bits']:.3f} (validation NLL)")
        for method, fit in head["fitted_floor"].items():
            print(f"{'  fitted floor, ' + method:<34}{'':<44}"
                  f"{_num(fit['c'], 3) + _interval(fit['ci'], 3)} ({fit['status']})")
    gap = summary["gaussian_bits_from_true_floor"] - val["bits"]
    print(f"0.5 log2(2 pi e c) at the true floor {'over' if gap > 0 else 'under'}states the true "
          f"bits by {abs(gap):.3f} bits per masked gene")
    if head is not None:
        print(f"the Gaussian head's bits are {_signed(head['above_true_bits'])} bits from the true "
              f"bits (a cross-entropy: at or above them up to their error bar)")
    print(f"finished in {calibration.wall_time_s / 60:.1f} min")
    if calibration.floor_beaten:
        print("WARNING: SOMETHING IS WRONG: the best model's validation MSE "
              f"{summary['best_val_mse']:.4f} beats the Bayes-optimal floor {val['mse']:.4f} by "
              f"more than {FLOOR_Z} standard errors ({val['mse_se']:.4f}); no predictor can do "
              "that. Look for masked values leaking into the input or masks that differ from "
              "the validation masks.")
    if calibration.entropy_beaten:
        head = summary["gaussian_head_bits"]
        print("WARNING: SOMETHING IS WRONG: the Gaussian head's validation bits "
              f"{head['best_val_bits']:.4f} fall below the true conditional entropy "
              f"{val['bits']:.4f} by more than {FLOOR_Z} standard errors ({val['bits_se']:.4f}); "
              "a cross-entropy cannot. Look for masked values leaking into the input, masks that "
              "differ from the validation masks, or values transformed before the head.")


def _num(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _interval(bounds: list | None, digits: int) -> str:
    if not bounds or None in bounds:
        return ""
    return f" [{bounds[0]:.{digits}f}, {bounds[1]:.{digits}f}]"


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def _pm(value: float, se: float) -> str:
    return f"{value:.4f} +- {FLOOR_Z * se:.4f} (95%)"
