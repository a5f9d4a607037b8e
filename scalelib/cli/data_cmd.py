"""Data commands: ``scalelib data build`` (a source -> an on-disk dataset) and ``data info``.

``--source`` takes ``census`` (the public CELLxGENE Census, the default), ``soma:URI`` (any
SOMA store in the Census layout, e.g. a local copy), ``simulate`` (the built-in simulator),
``mixture`` (the Gaussian mixture whose masked-reconstruction floor is known, optionally
``--fit-to`` real data; :mod:`scalelib.data.floor_dataset`) or a path (an ``.h5ad`` file with
raw counts in X, ``layers["counts"]`` or ``.raw``, or a 10x directory). Every source of counts
goes through the same builder (:mod:`scalelib.data.build`); the mixture writes normalised log
values directly. The dataset is written atomically in the format of
:mod:`scalelib.data.store`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from scalelib.cli.core import int_list, name_list
from scalelib.config import PAPER_REGIMES, Regime
from scalelib.errors import ScalelibError

if TYPE_CHECKING:  # imported at run time only by the commands that need it
    from scalelib.data.store import ExpressionDataset

DATASETS_DIR = Path("data/datasets")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data build`` and ``data info``.

    Parameters
    ----------
    subparsers
        The subcommand group of the ``scalelib`` parser; ``data`` is added to it.
    """
    parser = subparsers.add_parser("data", help="build and inspect on-disk datasets")
    commands = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    _register_build(commands)
    _register_info(commands)


# ---------------------------------------------------------------- build
def _register_build(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "build", help="turn a source of raw counts into a dataset that training reads",
        description="Draw cells, split them, select highly variable genes on the training "
                    "cells, normalise (total 1e4, log1p) and write a memory-mappable dataset.",
    )
    parser.add_argument(
        "--source", default="census",
        help="census (default), soma:URI (a SOMA store in the Census layout), simulate, "
             "mixture (a Gaussian mixture with a known floor), or a PATH to an .h5ad file or "
             "a 10x directory")
    parser.add_argument("--regime", choices=sorted(PAPER_REGIMES),
                        help="rich (512 genes, 200,000 cells) or limited (1,024 genes, "
                             "10,000 cells); --genes and --cells override its numbers")
    parser.add_argument("--genes", type=int, help="vocabulary size V (highly variable genes)")
    parser.add_argument("--cells", type=int_list,
                        help="cells to draw, or nested sizes sharing genes, val and test "
                             "(e.g. 10000,25000,50000); files default to every cell")
    parser.add_argument("--seed", type=int, default=0, help="seed of draw, split, order (0)")
    parser.add_argument("--out", type=Path,
                        help="dataset directory (default data/datasets/<regime>)")
    parser.add_argument("--holdout", help="obs column whose groups val and test take whole "
                                          "(dataset_id, donor_id, sample_id, ...)")
    parser.add_argument("--stratify", default="cell_type",
                        help="obs column whose proportions each split keeps (cell_type; "
                             "without that column the split is random, as the summary notes)")
    parser.add_argument("--subsample", type=name_list, default=["random"],
                        help="how the nested training subsets of --cells are drawn, one order "
                             "per strategy: random (default), rebalanced (towards equal shares "
                             "of --balance-by), geosketch (geometric sketches of a PCA); e.g. "
                             "random,rebalanced,geosketch")
    parser.add_argument("--balance-by", metavar="COL",
                        help="obs column that rebalanced evens out (default: --stratify)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    mixture = parser.add_argument_group("mixture source (known floor)")
    mixture.add_argument("--fit-to", type=Path, metavar="PATH",
                         help="fit the mixture to a dataset directory, .h5ad file or 10x "
                              "directory (default: to cells of the count simulator)")
    mixture.add_argument("--fit-labels", default="cell_type",
                         help="obs column of cell types of --fit-to (absent: k-means clusters)")
    mixture.add_argument("--mixture-types", type=int, default=8,
                         help="cell types of the count simulator, or clusters of unlabelled "
                              "--fit-to data (8)")
    mixture.add_argument("--mixture-rank", type=int, default=8,
                         help="gene programs per type (8)")
    census = parser.add_argument_group("census and SOMA sources")
    census.add_argument("--census-version", default=None,
                        help="Census release (default 2025-11-08, the LTS release pinned in "
                             "scalelib.data.census)")
    census.add_argument("--organism", default="Homo sapiens", help="organism (Homo sapiens)")
    census.add_argument("--obs-filter", help="extra SOMA value-filter term, e.g. "
                                             "\"sex == 'female'\"")
    census.add_argument("--tissue", action="append", default=[],
                        help="keep cells of this tissue_general or tissue (repeatable)")
    census.add_argument("--assay", action="append", default=[], help="keep this assay (repeatable)")
    census.add_argument("--disease", action="append", default=[],
                        help="keep this disease, e.g. normal (repeatable)")
    census.add_argument("--include-secondary", action="store_true",
                        help="drop the default is_primary_data == True term")
    census.add_argument("--chunk-cells", type=int, default=None,
                        help="cells per read of raw counts (2,000)")
    parser.set_defaults(handler=_build)


def _build(args: argparse.Namespace) -> int:
    from scalelib.data.store import check_writable
    from scalelib.data.subsample import check_strategies

    args.subsample = check_strategies(args.subsample, balance_by=args.balance_by or args.stratify)
    if args.balance_by and "rebalanced" not in args.subsample:
        raise ScalelibError("--balance-by applies to rebalanced subsets; add rebalanced to "
                            "--subsample or drop --balance-by")
    regime = PAPER_REGIMES[args.regime] if args.regime else None
    n_genes = args.genes if args.genes is not None else (regime.n_genes if regime else None)
    _check_mixture_options(args)
    if n_genes is None and not (args.source == "mixture" and args.fit_to):
        raise ScalelibError("give --regime rich|limited or --genes V")
    sizes = args.cells or ([regime.n_cells] if regime else None)
    label = args.regime or "custom"
    out = args.out or DATASETS_DIR / label
    check_writable(out, args.overwrite)
    dataset = _build_dataset(args, n_genes, sizes, label, out.parent)
    dataset.write(out, overwrite=args.overwrite)
    _print_built(out, dataset)
    return 0


def _build_dataset(args: argparse.Namespace, n_genes: int, sizes: list[int] | None,
                   label: str, spill_dir: Path) -> ExpressionDataset:
    source = args.source
    common = {"seed": args.seed, "holdout": args.holdout, "stratify": args.stratify or None,
              "subsample": args.subsample, "balance_by": args.balance_by}
    if source == "census" or source.startswith("soma:"):
        return _build_from_soma(args, n_genes, sizes, label, spill_dir, common)
    _refuse_census_options(args)
    if source == "mixture":
        return _build_mixture(args, n_genes, _need_sizes(sizes, "the mixture"), label)
    if source == "simulate":
        from scalelib.data.preprocess import simulate_dataset

        sizes = _need_sizes(sizes, "the simulator")
        return simulate_dataset(Regime(label, n_genes, max(sizes)), n_cells=sizes,
                                n_total_genes=max(2000, 2 * n_genes), **common)
    from scalelib.data.preprocess import build_dataset
    from scalelib.data.sources import read_counts

    counts = read_counts(Path(source))
    return build_dataset(counts, n_genes, n_cells=sizes, regime=label, **common)


def _build_from_soma(args: argparse.Namespace, n_genes: int, sizes: list[int] | None,
                     label: str, spill_dir: Path, common: dict) -> ExpressionDataset:
    from scalelib.data.census import (
        CHUNK_CELLS,
        DEFAULT_CENSUS_VERSION,
        DEFAULT_OBS_FILTER,
        build_census_dataset,
        compose_obs_filter,
    )

    uri = args.source[len("soma:"):] if args.source.startswith("soma:") else None
    if uri == "":
        raise ScalelibError("give the store after soma:, e.g. --source soma:data/census")
    obs_filter = compose_obs_filter(
        None if args.include_secondary else DEFAULT_OBS_FILTER, tissue=args.tissue,
        assay=args.assay, disease=args.disease, extra=args.obs_filter,
    )
    if common["balance_by"] is None and "rebalanced" in common["subsample"]:
        common = {**common, "balance_by": common["stratify"]}
    return build_census_dataset(
        n_genes, _need_sizes(sizes, "the Census"), uri=uri,
        census_version=args.census_version or DEFAULT_CENSUS_VERSION, organism=args.organism,
        obs_filter=obs_filter, regime=label, chunk_cells=args.chunk_cells or CHUNK_CELLS,
        spill_dir=spill_dir, progress=not args.quiet, **common,
    )


def _check_mixture_options(args: argparse.Namespace) -> None:
    if args.mixture_types < 1 or args.mixture_rank < 1:
        raise ScalelibError("--mixture-types and --mixture-rank must be positive integers")
    if args.source != "mixture" and args.fit_to is not None:
        raise ScalelibError("--fit-to only applies to --source mixture; drop it or add "
                            "--source mixture")
    if args.fit_to is not None and not args.fit_to.exists():
        raise ScalelibError(f"--fit-to {args.fit_to} does not exist; give a dataset directory, "
                            "an .h5ad file or a 10x directory")
    if args.source == "mixture" and args.holdout:
        raise ScalelibError("the mixture has no donors to hold out; drop --holdout")


def _build_mixture(args: argparse.Namespace, n_genes: int | None, sizes: list[int],
                   label: str) -> ExpressionDataset:
    from scalelib.data.floor_dataset import (
        mixture_dataset,
        mixture_from_data,
        mixture_from_simulator,
    )

    if args.fit_to is None:
        fitted = mixture_from_simulator(n_genes, n_types=args.mixture_types,
                                        rank=args.mixture_rank, seed=args.seed)
    else:
        fitted = mixture_from_data(args.fit_to, n_genes=n_genes, n_types=args.mixture_types,
                                   rank=args.mixture_rank, labels=args.fit_labels,
                                   seed=args.seed)
    return mixture_dataset(fitted.mixture, sizes, seed=args.seed, regime=label,
                           gene_names=fitted.gene_names, gene_ids=fitted.gene_ids,
                           provenance=fitted.provenance)


def _need_sizes(sizes: list[int] | None, what: str) -> list[int]:
    if not sizes:
        raise ScalelibError(f"say how many cells to draw from {what}: --regime or --cells")
    return sizes


def _refuse_census_options(args: argparse.Namespace) -> None:
    given = [name for name, value in (
        ("--census-version", args.census_version), ("--obs-filter", args.obs_filter),
        ("--tissue", args.tissue), ("--assay", args.assay), ("--disease", args.disease),
        ("--include-secondary", args.include_secondary), ("--chunk-cells", args.chunk_cells),
    ) if value]
    if given:
        raise ScalelibError(
            f"{', '.join(given)} only apply to --source census or soma:URI; drop them or "
            "filter the file before building"
        )


def _print_built(out: Path, dataset: ExpressionDataset) -> None:
    manifest = dataset.manifest
    cells = {split: dataset.n_cells(split) for split in ("train", "val", "test")}
    print(f"wrote {out}: {sum(cells.values()):,} cells (train {cells['train']:,}, "
          f"val {cells['val']:,}, test {cells['test']:,}) x {dataset.n_genes:,} genes")
    for line in _describe(manifest, dataset.fingerprint):
        print(f"  {line}")
    sizes = manifest.get("train_sizes") or []
    hint = f" --train-sizes {','.join(map(str, sizes))}" if len(sizes) > 1 else ""
    strategies = dataset.built_subsamples
    hint += f" --subsample {','.join(strategies)}" if strategies != ["random"] else ""
    print(f"train on it: scalelib sweep --data {out}{hint}")


def _describe(manifest: dict, fingerprint: str) -> list[str]:
    """Lines about source, query, split and sizes of a dataset manifest."""
    provenance = manifest.get("provenance", {})
    where = provenance.get("uri") or provenance.get("path") or ""
    lines = [f"source: {manifest.get('source', 'unknown')} {where}".rstrip()]
    if manifest.get("census_version") or manifest.get("obs_filter"):
        lines.append(f"census version: {manifest.get('census_version')}; obs filter: "
                     f"{manifest.get('obs_filter')}; "
                     f"{provenance.get('n_matching_cells', 0):,} cells matched")
    split = manifest.get("split", {})
    design = split.get("method", "?")
    if design == "holdout":
        groups = split.get("groups", {})
        design += (f" of {split.get('holdout')} (val {', '.join(groups.get('val', []))}; "
                   f"test {', '.join(groups.get('test', []))})")
    elif split.get("stratify"):
        design += f" by {split['stratify']}"
    lines.append(f"split: {design}; seed {manifest.get('seed')}"
                 + (f" (note: {split['note']})" if split.get("note") else ""))
    lines.append("nested training sizes: "
                 + ", ".join(f"{n:,}" for n in manifest.get("train_sizes", [])))
    floor = manifest.get("bayes_floor")
    if floor:
        val, population = floor["val"], floor["expected"]
        lines.append(f"known floor at mask rate {floor['mask_rate']:g}: Bayes-optimal MSE "
                     f"{val['mse']:.4f} (se {val['mse_se']:.4f}) and {val['bits']:.3f} bits per "
                     f"masked gene on the validation masks; population {population['mse']:.4f}"
                     f" and {population['bits']:.3f} bits")
    subsample = manifest.get("subsample") or {"strategies": ["random"]}
    balance = (f" (rebalanced by {subsample['balance_by']})"
               if subsample.get("balance_by") else "")
    lines.append(f"subsets drawn by: {', '.join(subsample['strategies'])}{balance}")
    lines.append(f"fingerprint: {fingerprint}")
    return lines


# ---------------------------------------------------------------- info
def _register_info(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("info", help="describe a dataset directory")
    parser.add_argument("path", type=Path, help="a dataset directory")
    parser.set_defaults(handler=_info)


def _info(args: argparse.Namespace) -> int:
    from scalelib.data.store import load_dataset

    dataset = load_dataset(args.path)
    cells = {split: dataset.n_cells(split) for split in ("train", "val", "test")}
    print(f"{args.path}: {dataset.regime} regime, {sum(cells.values()):,} cells (train "
          f"{cells['train']:,}, val {cells['val']:,}, test {cells['test']:,}) x "
          f"{dataset.n_genes:,} genes")
    for line in _describe(dataset.manifest, dataset.fingerprint):
        print(f"  {line}")
    genes = dataset.genes
    print(f"  genes: {', '.join(genes[:8])}{', ...' if len(genes) > 8 else ''}")
    print(f"  per-gene HVG table: {'hvg.parquet' if dataset.hvg is not None else 'none'}")
    return 0
