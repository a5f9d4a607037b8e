"""``scalelib baselines``: mean, PCA, ridge and kNN predictors on a dataset's evaluation masks.

Examples::

    scalelib baselines --data data/datasets/kang8
    scalelib baselines --data data/datasets/kang8 --json --train-size 2000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from scalelib.config import TRAIN_PRESETS
from scalelib.errors import ScalelibError

if TYPE_CHECKING:
    from scalelib.baselines import BaselineResult

FAMILY_CHOICES = ("mean", "pca", "ridge", "knn")  # scalelib.baselines.FAMILIES (a test compares)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``baselines`` sub-command."""
    parser = subparsers.add_parser(
        "baselines",
        help="score mean, PCA, ridge and kNN predictors on the masks the transformers are scored on",
        description="Fit each baseline on the training cells (its setting chosen on an inner "
        "split of them) and score it on the validation and test cells under the fixed masks "
        "a sweep with the same --train-preset, --mask-rate and --eval-mask-seed uses.",
    )
    parser.add_argument("--data", type=Path, required=True,
                        help="a dataset directory from `scalelib data build`")
    parser.add_argument("--families", type=_family_list, default=list(FAMILY_CHOICES),
                        help="comma-separated families (default mean,pca,ridge,knn)")
    parser.add_argument("--train-size", type=int, metavar="N",
                        help="fit on the nested training subset of N cells (default: all)")
    parser.add_argument("--train-preset", default="demo", choices=sorted(TRAIN_PRESETS),
                        help="the sweep preset whose masks to use (default demo)")
    parser.add_argument("--mask-rate", type=float, help="fraction of genes masked (preset's)")
    parser.add_argument("--eval-mask-seed", type=int,
                        help="seed of the validation mask; test uses seed + 1 (preset's)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the inner split and the kNN reference subsample (0)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of {family, val_mse, test_mse, setting, ...}")
    parser.set_defaults(handler=run_baselines)


def _family_list(text: str) -> list[str]:
    names = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [name for name in names if name not in FAMILY_CHOICES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown family {unknown[0] if unknown else text!r}; choose from "
            f"{', '.join(FAMILY_CHOICES)}")
    return names


def run_baselines(args: argparse.Namespace) -> int:
    """Fit the baselines and print a table or JSON; return the exit status."""
    from scalelib.baselines import fit_baselines
    from scalelib.data.store import load_dataset

    preset = TRAIN_PRESETS[args.train_preset]
    mask_rate = preset.mask_rate if args.mask_rate is None else args.mask_rate
    if not 0.0 < mask_rate < 1.0:
        raise ScalelibError(f"--mask-rate must lie in (0, 1), got {mask_rate}")
    eval_mask_seed = preset.eval_mask_seed if args.eval_mask_seed is None else args.eval_mask_seed
    dataset = load_dataset(args.data)
    progress = None if args.json or not sys.stderr.isatty() else _announce
    results = fit_baselines(dataset, families=args.families, n_train=args.train_size,
                            mask_rate=mask_rate, eval_mask_seed=eval_mask_seed, seed=args.seed,
                            on_family=progress)
    if args.json:
        print(json.dumps([result.to_dict() for result in results], indent=1))
        return 0
    print(f"baselines on {args.data} ({results[0].n_train_cells:,} training cells, mask rate "
          f"{mask_rate:g}, eval mask seed {eval_mask_seed})")
    print(f"{'family':<8}{'setting':<16}{'val_mse':>10}{'test_mse':>10}{'inner_mse':>11}"
          f"{'seconds':>9}")
    for result in results:
        print(f"{result.family:<8}{result.setting:<16}{result.val_mse:>10.4f}"
              f"{result.test_mse:>10.4f}{result.inner_mse:>11.4f}{result.fit_seconds:>9.1f}")
    return 0


def _announce(result: BaselineResult) -> None:
    print(f"  {result.family} done in {result.fit_seconds:.1f} s", file=sys.stderr)
