"""``scalelib probe``: downstream probes of a sweep's checkpoints and the saturation point.

Examples::

    scalelib probe --sweep data/sweeps/kang8 --label cluster_id
    scalelib probe --sweep /read/only/sweep --out data/probes/sweep --json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from scalelib.cli.core import name_list
from scalelib.errors import ScalelibError

if TYPE_CHECKING:
    import polars as pl

SCORE_COLUMNS = ("regime", "subsample", "model_family", "size", "params", "n_train_cells", "seed",
                 "classifier", "macro_f1", "accuracy")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``probe`` sub-command."""
    parser = subparsers.add_parser(
        "probe",
        help="score what each run learned: logistic-regression and kNN probes of a label",
        description="For each finished transformer run of a sweep, embed cells with its best "
        "checkpoint (mean over genes of the last hidden states), fit a logistic-regression and "
        "a kNN classifier of a label column on the training cells and score macro F1 on the "
        "test cells; the same probes on PCA of the expression and on the expression itself are "
        "the baselines. Writes probes.parquet (keyed by run_id) and prints the saturation point "
        "per size: the smallest training-set size D within --fraction of that size's best.",
    )
    parser.add_argument("--sweep", type=Path, required=True,
                        help="a sweep directory (the --out of `scalelib sweep`)")
    parser.add_argument("--label", default="cell_type",
                        help="obs column to predict (default cell_type)")
    parser.add_argument("--drop-labels", type=name_list, default=[],
                        help="comma-separated label values that mean unlabelled (e.g. NA_filtered)")
    parser.add_argument("--out", type=Path,
                        help="folder for probes.parquet (default: the sweep directory)")
    parser.add_argument("--data", type=Path, action="append", default=[],
                        help="dataset directory to use instead of the path a run recorded "
                        "(matched by content fingerprint; repeatable)")
    parser.add_argument("--probe-cells", type=int, default=20_000,
                        help="fit the probes on at most this many training cells (20,000)")
    parser.add_argument("--knn-k", type=int, default=15, help="neighbours of the kNN probe (15)")
    parser.add_argument("--bootstrap", type=int, default=200,
                        help="resamples of the test cells (and of the seeds at each D) for the "
                             "saturation interval (200)")
    parser.add_argument("--fraction", type=float, default=0.95,
                        help="share of a size's best score that counts as saturated (0.95)")
    parser.add_argument("--device", default="auto", help="where to run checkpoints (auto)")
    parser.add_argument("--rerun", action="store_true", help="probe runs already probed again")
    parser.add_argument("--json", action="store_true", help="print scores and saturation as JSON")
    parser.set_defaults(handler=run_probe)


def _check_args(args: argparse.Namespace) -> None:
    if args.probe_cells < 2 or args.knn_k < 1:
        raise ScalelibError("--probe-cells must be at least 2 and --knn-k at least 1")
    if args.bootstrap < 0:
        raise ScalelibError("--bootstrap must be 0 or a positive number of resamples")
    if not 0 < args.fraction <= 1:
        raise ScalelibError("--fraction must lie in (0, 1], e.g. 0.95")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise ScalelibError(f"--out {args.out} is a file; name a folder for probes.parquet")


def run_probe(args: argparse.Namespace) -> int:
    """Probe the sweep, print the scores and the saturation points."""
    from scalelib.probes import PROBES_FILE, ProbeSettings, run_probes
    from scalelib.results import print_table
    from scalelib.scaling.probe_summary import against_baselines
    from scalelib.scaling.saturation import saturation_points

    _check_args(args)
    settings = ProbeSettings(label=args.label, drop_labels=tuple(args.drop_labels),
                             probe_cells=args.probe_cells, knn_k=args.knn_k, device=args.device)

    def progress(index: int, total: int, target) -> None:
        if not args.json:
            print(f"probing {index + 1}/{total}: {target.label_text}", flush=True)

    probes = run_probes(args.sweep, out_dir=args.out, settings=settings, data=args.data,
                        rerun=args.rerun, on_target=progress)
    saturation = saturation_points(probes, fraction=args.fraction, n_bootstrap=args.bootstrap)
    scores = probes.select(*SCORE_COLUMNS).sort("regime", "subsample", "model_family", "params",
                                                "n_train_cells", "seed", "classifier",
                                                nulls_last=True)
    path = Path(args.out or args.sweep) / PROBES_FILE
    splits = probes["split"].unique().to_list()
    if args.json:
        print(json.dumps({"label": args.label, "split": splits, "probes": str(path),
                          "scores": scores.to_dicts(),
                          "saturation": saturation.drop("dataset_fingerprint").to_dicts(),
                          "against_baselines": against_baselines(probes).to_dicts()},
                         indent=2, default=str))
        return 0
    print(f"label {args.label!r}, macro F1 on test cells; " + "; ".join(splits))
    print_table(scores)
    if saturation.height:
        print(f"saturation point: smallest D within {args.fraction:.0%} of the size's best "
              f"seed-mean F1 (95% interval over {args.bootstrap} resamples of the test cells "
              "and, where a D has several seeds, of its seeds; n_seeds: the fewest at any D)")
        print_table(saturation.select("regime", "subsample", "model_family", "size",
                                      "classifier", "n_sizes", "n_seeds", "best_d", "best_f1",
                                      "saturation_d", "saturation_low", "saturation_high")
                    .sort("regime", "classifier", "subsample", "model_family", "size",
                          nulls_last=True))
    else:
        print("no saturation point: every run of a size was trained on one D "
              "(a data-size sweep, `scalelib sweep --train-sizes ...`, gives one)")
    _print_against_baselines(against_baselines(probes))
    print(f"probes: {path} ({probes.height} rows keyed by run_id, label and classifier; "
          "join to results.parquet on run_id)")
    return 0


def _print_against_baselines(table: pl.DataFrame) -> None:
    """The best transformer per strategy and classifier beside the PCA and expression probes."""
    from scalelib.results import print_table

    if table.height:
        print("transformers against the baselines (best seed-mean macro F1 of each; minus_pca "
              "< 0: the PCA probe is ahead):")
        print_table(table)
