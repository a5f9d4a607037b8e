"""Downstream probes: how well a cell representation tells the labels of an obs column apart.

For each finished transformer run of a sweep, a cell's embedding is the mean over genes of the
final hidden states of the run's best checkpoint, with no gene masked
(:meth:`~scalelib.model.MaskedExpressionTransformer.cell_embedding`). Two classifiers of a
label column (``cell_type`` by default) are fitted on those embeddings and scored by macro F1:
scikit-learn's multinomial logistic regression on standardised features and its
k-nearest-neighbour vote in Euclidean distance on the features as they are (standardising would
give a PCA's weak components the weight of its strong ones). The same two on PCA of the
normalised expression (PCA fitted on the run's nested training subset of D cells, drawn by the
run's subsampling strategy, like the model) and on the normalised expression itself are the
baselines (model families ``pca`` and ``expression``).

The split, written into every row (``split``): the classifiers are fitted on the labelled
training cells (the first ``probe_cells`` of the dataset's seeded random training order, the
same cells whatever D and subsampling strategy a run was trained with, so that only the
representation changes) and scored on every labelled test cell. When the dataset holds groups
out (donors, say), the test cells come from groups neither the model nor the probe saw: a
cross-group (e.g. cross-donor) test.

Scores go to ``probes.parquet``, one row per probed run and classifier, keyed by ``run_id``
(join it to ``results.parquet``), ``label`` and ``classifier``, with the test cells' true and
predicted labels as lists for the bootstrap of :mod:`scalelib.scaling.saturation`. The table is
rewritten atomically under a lock after each run, so an interruption loses at most one run;
re-running probes only what is missing. Nothing is written to ``results.parquet``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

from scalelib.atomic import atomic_path
from scalelib.data.store import ExpressionDataset, load_dataset
from scalelib.errors import ScalelibError, read_failures
from scalelib.locks import file_lock
from scalelib.provenance import code_version
from scalelib.results import read_results
from scalelib.scaling import ok_rows, transformer_rows

PROBES_FILE = "probes.parquet"
CLASSIFIERS = ("logreg", "knn")
PCA, EXPRESSION = "pca", "expression"
PROBE_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.Utf8, "model_family": pl.Utf8, "label": pl.Utf8, "classifier": pl.Utf8,
    "regime": pl.Utf8, "dataset": pl.Utf8, "dataset_fingerprint": pl.Utf8, "subsample": pl.Utf8,
    "n_train_cells": pl.Int64, "size": pl.Utf8, "params": pl.Int64, "seed": pl.Int64,
    "features": pl.Int64, "n_fit_cells": pl.Int64, "n_test_cells": pl.Int64,
    "n_classes": pl.Int64, "macro_f1": pl.Float64, "accuracy": pl.Float64, "split": pl.Utf8,
    "settings": pl.Utf8, "seconds": pl.Float64, "finished_at": pl.Utf8, "code_version": pl.Utf8,
    "truth": pl.List(pl.Utf8), "predicted": pl.List(pl.Utf8),
}


@dataclass(frozen=True)
class ProbeSettings:
    """What a probe is fitted on and how.

    Parameters
    ----------
    label
        The obs column to predict.
    drop_labels
        Label values that mark unlabelled cells (e.g. ``NA_filtered``), besides null and empty.
    probe_cells
        At most this many training cells (the first of the seeded training order) fit the probe.
    knn_k
        Neighbours of the kNN vote.
    logreg_c
        Inverse L2 strength of the logistic regression.
    pca_components
        Components of the PCA baseline (capped by genes and cells).
    batch_size
        Cells per forward pass when embedding (does not change the result).
    device
        Where checkpoints are run (``auto``, ``cpu``, ``cuda``, ...).
    """

    label: str = "cell_type"
    drop_labels: tuple[str, ...] = ()
    probe_cells: int = 20_000
    knn_k: int = 15
    logreg_c: float = 1.0
    pca_components: int = 50
    batch_size: int = 256
    device: str = "auto"

    def describe(self) -> str:
        """The classifier settings as one line (the ``settings`` column)."""
        return (f"logreg C={self.logreg_c:g} on standardised features (lbfgs, multinomial); "
                f"knn k={self.knn_k}, Euclidean on the features as they are; "
                f"pca {self.pca_components} components")


@dataclass(frozen=True)
class LabelledCells:
    """The cells a probe is fitted on and scored on, with their labels."""

    fit_rows: np.ndarray
    fit_labels: np.ndarray
    test_rows: np.ndarray
    test_labels: np.ndarray
    split: str


def labelled_cells(dataset: ExpressionDataset, settings: ProbeSettings) -> LabelledCells:
    """Fit and test cells of the probe, checking that the label can be probed at all.

    Parameters
    ----------
    dataset
        The dataset whose obs holds the label column.
    settings
        Label, unlabelled values and the cap on fit cells.

    Raises
    ------
    ScalelibError
        The column is missing, or the fit cells hold fewer than two classes, or no test cell
        is labelled.
    """
    obs, name = dataset.obs, dataset.manifest.get("path", "the dataset")
    if settings.label not in obs.columns:
        usable = [c for c in obs.columns if c not in ("cell_id", "split", "train_rank")
                  and obs.schema[c] in (pl.Utf8, pl.Categorical, pl.Enum)]
        raise ScalelibError(f"{name} has no obs column {settings.label!r}; pass --label with "
                            f"one of: {', '.join(usable) or 'none (the dataset keeps no labels)'}")
    labels = obs[settings.label].cast(pl.Utf8)
    labelled = (labels.is_not_null() & (labels != "") & ~labels.is_in(list(settings.drop_labels)))
    labelled = labelled.to_numpy()
    split, rank = obs["split"].to_numpy(), obs["train_rank"].to_numpy()
    fit = np.flatnonzero(labelled & (split == "train") & (rank < settings.probe_cells))
    test = np.flatnonzero(labelled & (split == "test"))
    values = labels.to_numpy()
    classes = np.unique(values[fit]) if fit.size else np.array([])
    if classes.size < 2:
        found = f"only {classes[0]!r}" if classes.size else "no labelled cell"
        raise ScalelibError(f"the training cells of {name} have {found} in {settings.label!r}; "
                            "a probe needs two or more classes: choose another --label")
    if not test.size:
        raise ScalelibError(f"no test cell of {name} is labelled in {settings.label!r}; "
                            "choose another --label")
    return LabelledCells(fit, values[fit], test, values[test], split_statement(dataset, fit, test))


def split_statement(dataset: ExpressionDataset, fit: np.ndarray, test: np.ndarray) -> str:
    """One sentence saying which cells fit the probe and which score it."""
    split = dataset.manifest.get("split", {})
    if split.get("method") == "holdout":
        groups = ", ".join(map(str, split.get("groups", {}).get("test", [])))
        held = (f"the test cells are the held-out {split.get('holdout')} group(s) {groups}: "
                f"a cross-{split.get('holdout')} test")
    else:
        held = "the test cells are a random split of the same donors and batches"
    return (f"probe fitted on {len(fit):,} labelled training cells and scored on {len(test):,} "
            f"labelled test cells; {held}")


def classify(fit_features: np.ndarray, fit_labels: np.ndarray, test_features: np.ndarray,
             settings: ProbeSettings) -> dict[str, np.ndarray]:
    """Predicted test labels of each classifier of :data:`CLASSIFIERS`.

    Parameters
    ----------
    fit_features, fit_labels
        Features and labels of the fit cells.
    test_features
        Features of the test cells.
    settings
        Regularisation and neighbours.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    models = {
        "logreg": make_pipeline(StandardScaler(),
                                LogisticRegression(C=settings.logreg_c, max_iter=2000)),
        "knn": KNeighborsClassifier(n_neighbors=min(settings.knn_k, len(fit_labels))),
    }
    return {name: model.fit(fit_features, fit_labels).predict(test_features)
            for name, model in models.items()}


def transformer_features(checkpoint: str | Path, X: np.ndarray, rows: np.ndarray,
                         settings: ProbeSettings) -> np.ndarray:
    """Mean-pooled final hidden states of a checkpoint for the given cells, no gene masked.

    Parameters
    ----------
    checkpoint
        A ``best.pt`` written by :func:`scalelib.train.train` (loaded with ``weights_only``).
    X
        The dataset's expression matrix (in memory or memory-mapped).
    rows
        Cells to embed.
    settings
        Batch size and device.
    """
    import torch

    from scalelib.hardware import resolve_device
    from scalelib.train import load_checkpoint

    device = resolve_device(settings.device)
    model = load_checkpoint(checkpoint, map_location=str(device))
    out = []
    with torch.no_grad():
        for start in range(0, len(rows), settings.batch_size):
            batch = np.asarray(X[rows[start:start + settings.batch_size]], dtype=np.float32)
            out.append(model.cell_embedding(torch.from_numpy(batch).to(device)).cpu().numpy())
    return np.concatenate(out)


def pca_features(dataset: ExpressionDataset, n_train: int, cells: LabelledCells,
                 settings: ProbeSettings) -> tuple[np.ndarray, np.ndarray]:
    """Fit and test features from a PCA fitted on the nested training subset of ``n_train``."""
    from sklearn.decomposition import PCA

    reference = dataset.split_values("train", n_train)
    components = min(settings.pca_components, dataset.n_genes, len(reference) - 1)
    pca = PCA(n_components=components, random_state=0).fit(reference)
    return (pca.transform(np.asarray(dataset.X[cells.fit_rows], dtype=np.float32)),
            pca.transform(np.asarray(dataset.X[cells.test_rows], dtype=np.float32)))


@dataclass(frozen=True)
class ProbeTarget:
    """One representation to probe: a trained run, or a baseline of one dataset and D."""

    run_id: str
    model_family: str
    dataset_key: str
    columns: dict
    checkpoint: Path | None = None

    @property
    def label_text(self) -> str:
        """A short description for progress output (with the subsampling strategy unless
        random, as sweep labels have it)."""
        if self.model_family == EXPRESSION:
            return f"{EXPRESSION} (all {self.columns['regime']} genes)"
        drawn = self.columns.get("subsample")
        drawn = f" {drawn}" if drawn not in (None, "random") else ""
        if self.model_family == PCA:
            return f"{PCA} D={self.columns['n_train_cells']}{drawn}"
        return (f"{self.columns['size']} seed {self.columns['seed']} "
                f"D={self.columns['n_train_cells']}{drawn}")


def _baseline_id(fingerprint: str, family: str, n_train: int | None) -> str:
    key = {"dataset": fingerprint, "model_family": family, "n_train": n_train}
    return f"{family}-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def finished_runs(results: pl.DataFrame) -> pl.DataFrame:
    """The finished transformer runs of a results table, in probing order."""
    return transformer_rows(ok_rows(results)).sort("dataset_fingerprint", "n_train_cells",
                                                   "params", "seed")


def plan_probes(runs: pl.DataFrame, sweep_dir: Path,
                datasets: Mapping[str, ExpressionDataset]) -> list[ProbeTarget]:
    """Every finished transformer run, then the PCA baseline per dataset view (subsampling
    strategy) and D, and the expression baseline once per dataset.

    Parameters
    ----------
    runs
        Finished transformer runs (:func:`finished_runs`).
    sweep_dir
        The sweep directory (checkpoints are looked for in ``runs/<run_id>/best.pt`` first).
    datasets
        The dataset view of each run's ``dataset_fingerprint`` (:func:`open_datasets`); the
        expression baseline does not depend on the strategy, so it is keyed by the dataset's
        own (random view's) fingerprint.
    """
    keep = ["regime", "dataset", "dataset_fingerprint", "subsample", "n_train_cells", "size",
            "params", "seed"]
    targets = []
    for row in runs.to_dicts():
        checkpoint = sweep_dir / "runs" / row["run_id"] / "best.pt"
        if not checkpoint.exists() and row.get("checkpoint"):
            checkpoint = Path(row["checkpoint"])
        columns = {name: row.get(name) for name in keep}
        targets.append(ProbeTarget(row["run_id"], "transformer", row["dataset_fingerprint"],
                                   columns, checkpoint))
    baselines = runs.unique(["dataset_fingerprint", "n_train_cells"], maintain_order=True)
    for row in baselines.to_dicts():
        columns = {**{name: row.get(name) for name in keep}, "size": None, "params": None,
                   "seed": None}
        targets.append(ProbeTarget(_baseline_id(row["dataset_fingerprint"], PCA,
                                                row["n_train_cells"]),
                                   PCA, row["dataset_fingerprint"], columns))
    planned = set()
    for row in runs.unique("dataset_fingerprint", maintain_order=True).to_dicts():
        own = datasets[row["dataset_fingerprint"]].subsampled("random").fingerprint
        if own in planned:
            continue
        planned.add(own)
        columns = {**{name: row.get(name) for name in keep}, "dataset_fingerprint": own,
                   "size": None, "params": None, "seed": None, "n_train_cells": None,
                   "subsample": None}
        targets.append(ProbeTarget(_baseline_id(own, EXPRESSION, None), EXPRESSION,
                                   row["dataset_fingerprint"], columns))
    return targets


def open_datasets(runs: pl.DataFrame,
                  data: Sequence[Path | ExpressionDataset] = ()) -> dict[str, ExpressionDataset]:
    """The dataset view of each run's ``dataset_fingerprint``: the dataset (one of ``data``,
    directories or datasets, with matching content, else the directory the run recorded) seen
    through the run's subsampling strategy (:meth:`ExpressionDataset.subsampled`), so that a
    run's PCA baseline is fitted on the training subset its strategy drew.

    Parameters
    ----------
    runs
        Finished transformer runs (:func:`finished_runs`).
    data
        Datasets to use instead of the recorded directories, matched by fingerprint.

    Raises
    ------
    ScalelibError
        A fingerprint has no dataset with matching content and strategy.
    """
    given = {}
    for item in data:
        dataset = item if isinstance(item, ExpressionDataset) else load_dataset(item)
        for strategy in dataset.subsamples:
            view = dataset.subsampled(strategy)
            given[view.fingerprint] = view
    found = {}
    for row in runs.unique("dataset_fingerprint", maintain_order=True).to_dicts():
        key, strategy = row["dataset_fingerprint"], row["subsample"]
        if key in given:
            found[key] = given[key]
            continue
        path = Path(str(row["dataset"]))
        dataset = load_dataset(path) if path.is_dir() else None
        if dataset is not None and strategy in dataset.subsamples:
            dataset = dataset.subsampled(strategy)
        if dataset is None or dataset.fingerprint != key:
            raise ScalelibError(f"the dataset of run {row['run_id']} (fingerprint {key}, "
                                f"{strategy} subsets) is not at {path}; pass its directory "
                                "with --data")
        found[key] = dataset
    return found


def _missing_checkpoints(targets: Sequence[ProbeTarget]) -> list[ProbeTarget]:
    return [t for t in targets if t.checkpoint is not None and not t.checkpoint.exists()]


def probe_target(target: ProbeTarget, dataset: ExpressionDataset, cells: LabelledCells,
                 settings: ProbeSettings) -> list[dict]:
    """Probe one representation with every classifier; one probes-table row each."""
    from sklearn.metrics import accuracy_score, f1_score

    started = time.perf_counter()
    if target.model_family == "transformer":
        fit_x = transformer_features(target.checkpoint, dataset.X, cells.fit_rows, settings)
        test_x = transformer_features(target.checkpoint, dataset.X, cells.test_rows, settings)
    elif target.model_family == PCA:
        fit_x, test_x = pca_features(dataset, target.columns["n_train_cells"], cells, settings)
    else:
        fit_x = np.asarray(dataset.X[cells.fit_rows], dtype=np.float32)
        test_x = np.asarray(dataset.X[cells.test_rows], dtype=np.float32)
    predictions = classify(fit_x, cells.fit_labels, test_x, settings)
    seconds = time.perf_counter() - started
    truth = cells.test_labels.tolist()
    return [{
        **target.columns, "run_id": target.run_id, "model_family": target.model_family,
        "label": settings.label, "classifier": name, "features": fit_x.shape[1],
        "n_fit_cells": len(cells.fit_rows), "n_test_cells": len(cells.test_rows),
        "n_classes": len(np.unique(cells.fit_labels)),
        "macro_f1": float(f1_score(cells.test_labels, predicted, average="macro",
                                     zero_division=0.0)),
        "accuracy": float(accuracy_score(cells.test_labels, predicted)),
        "split": cells.split, "settings": settings.describe(), "seconds": seconds,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(), "truth": truth, "predicted": predicted.tolist(),
    } for name, predicted in predictions.items()]


def read_probes(path: str | Path) -> pl.DataFrame:
    """Read a probes table (an empty one when the file does not exist yet).

    Parameters
    ----------
    path
        A ``probes.parquet`` written by :func:`run_probes`.
    """
    path = Path(path)
    if not path.exists():
        return pl.DataFrame(schema=PROBE_SCHEMA)
    with read_failures(path, "delete it and probe again (`scalelib probe --rerun`)"):
        table = pl.read_parquet(path)
    missing = [name for name in PROBE_SCHEMA if name not in table.columns]
    if missing:
        raise ScalelibError(f"{path} is not a probes table (missing {', '.join(missing[:4])}); "
                            "choose another --out")
    return table.select(pl.col(name).cast(dtype) for name, dtype in PROBE_SCHEMA.items())


def append_probes(rows: list[dict], path: Path) -> pl.DataFrame:
    """Add rows to the probes table at ``path``, replacing rows of the same key, atomically."""
    new = pl.DataFrame([{name: row.get(name) for name in PROBE_SCHEMA} for row in rows],
                       schema=PROBE_SCHEMA, orient="row")
    keys = ["run_id", "label", "classifier"]
    with file_lock(path.with_name(f".{path.name}.lock")):
        table = pl.concat([read_probes(path).join(new.select(keys), on=keys, how="anti"), new])
        with atomic_path(path) as temporary:
            table.write_parquet(temporary)
    return table


def run_probes(sweep_dir: str | Path, *, out_dir: str | Path | None = None,
               settings: ProbeSettings = ProbeSettings(),
               data: Sequence[Path | ExpressionDataset] = (),
               rerun: bool = False,
               on_target: Callable[[int, int, ProbeTarget], None] | None = None) -> pl.DataFrame:
    """Probe every finished transformer run of a sweep and the two baselines.

    Everything is checked (results, datasets, label, checkpoints, output folder) before the
    first probe.

    Parameters
    ----------
    sweep_dir
        A sweep directory holding ``results.parquet`` and ``runs/``.
    out_dir
        Where ``probes.parquet`` goes (default: ``sweep_dir``).
    settings
        Label and classifier settings.
    data
        Dataset directories (or datasets in memory) to use instead of the directories the runs
        recorded, matched by content fingerprint.
    rerun
        Probe again what the table already holds for this label.
    on_target
        Called with (index, total, target) before each probe (for progress output).

    Returns
    -------
    polars.DataFrame
        The whole probes table for this label, after probing.
    """
    sweep_dir = Path(sweep_dir)
    out_path = Path(out_dir or sweep_dir) / PROBES_FILE
    if not (sweep_dir / "results.parquet").is_file():
        raise ScalelibError(f"{sweep_dir} has no results.parquet; point --sweep at the --out "
                            "of a `scalelib sweep`")
    runs = finished_runs(read_results(sweep_dir / "results.parquet"))
    if not runs.height:
        raise ScalelibError(f"{sweep_dir} holds no finished transformer run; run the sweep first")
    datasets = open_datasets(runs, data)
    targets = plan_probes(runs, sweep_dir, datasets)
    missing = _missing_checkpoints(targets)
    if missing:
        raise ScalelibError(f"{len(missing)} run(s) have no checkpoint (e.g. {missing[0].checkpoint});"
                            " retrain them with `scalelib sweep ... --rerun`")
    cells = {key: labelled_cells(dataset, settings) for key, dataset in datasets.items()}
    existing = read_probes(out_path)
    _check_out(out_path)
    done = set() if rerun else set(existing.filter(pl.col("label") == settings.label)["run_id"])
    pending = [t for t in targets if t.run_id not in done]
    for index, target in enumerate(pending):
        if on_target is not None:
            on_target(index, len(pending), target)
        rows = probe_target(target, datasets[target.dataset_key], cells[target.dataset_key],
                            settings)
        append_probes(rows, out_path)
    return read_probes(out_path).filter(pl.col("label") == settings.label)


def _check_out(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(path.with_name(f".{path.name}.lock"), wait=False):
            pass
    except OSError as error:
        raise ScalelibError(f"cannot write {path} ({error.strerror}); choose a writable --out") from None


def settings_dict(settings: ProbeSettings) -> dict:
    """The settings as plain JSON data."""
    return {**asdict(settings), "drop_labels": list(settings.drop_labels)}
