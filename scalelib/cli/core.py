"""Core commands: ``ladder``, ``sweep``, ``demo`` and ``bench``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from scalelib.config import (
    OBJECTIVES,
    TRAIN_PRESETS,
    TrainConfig,
    find_size,
    get_ladder,
    select_sizes,
)
from scalelib.errors import ScalelibError

if TYPE_CHECKING:
    import polars as pl

    from scalelib.sweep import RunSpec


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the core sub-commands."""
    _register_ladder(subparsers)
    _register_sweep(subparsers)
    _register_demo(subparsers)
    _register_bench(subparsers)


# ---------------------------------------------------------------- ladder
def _register_ladder(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ladder", help="list a ladder of model sizes with parameter counts")
    parser.add_argument("--preset", default="paper", help="paper, demo or smoke (default paper)")
    parser.add_argument("--genes", type=int, default=512, help="vocabulary size V (default 512)")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.set_defaults(handler=_ladder)


def _ladder(args: argparse.Namespace) -> int:
    from scalelib.model import count_parameters

    if args.genes < 1:
        raise ScalelibError("--genes must be a positive integer")
    rows = [
        {**size.to_dict(), "params": count_parameters(size, args.genes)}
        for size in get_ladder(args.preset)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{args.preset} ladder at V={args.genes}")
    print(f"{'name':<6}{'d_model':>8}{'layers':>8}{'heads':>7}{'ff_mult':>9}{'params':>14}")
    for row in rows:
        print(f"{row['name']:<6}{row['d_model']:>8}{row['n_layers']:>8}{row['n_heads']:>7}"
              f"{row['ff_mult']:>9}{row['params']:>14,}")
    return 0


# ---------------------------------------------------------------- training options
def add_training_options(parser: argparse.ArgumentParser, *, preset_default: str = "demo",
                         budget_note: str = "") -> None:
    """Options that build a :class:`TrainConfig` (shared by sweep and demo).

    Parameters
    ----------
    parser
        The sub-command's parser.
    preset_default
        Help text of ``--train-preset``'s default: a preset name, or words naming where the
        command takes it from (``training_config``'s ``preset``).
    budget_note
        Appended to the help of ``--steps`` and ``--cells``.
    """
    group = parser.add_argument_group("training")
    group.add_argument("--train-preset", choices=sorted(TRAIN_PRESETS),
                       help=f"starting point for the options below (default {preset_default})")
    budget = group.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="budget in optimiser steps" + budget_note)
    budget.add_argument("--cells", type=int, help="budget in training cells seen" + budget_note)
    group.add_argument("--budget", choices=("fixed", "converge"), dest="budget_mode",
                       help="fixed: train the whole budget; converge: train until doubling "
                       "the steps no longer pays (a cool-down beats the one branched off at "
                       "half the steps by less than --converge-tol), with --steps/--cells as "
                       "the cap")
    group.add_argument("--converge-tol", type=float,
                       help="relative improvement that still counts as converged (0.01)")
    group.add_argument("--batch", type=int, help="cells per optimiser step")
    group.add_argument("--lr", type=float, help="peak learning rate")
    group.add_argument("--schedule", choices=("cosine", "constant"), help="learning-rate schedule")
    group.add_argument("--mask-rate", type=float, help="fraction of genes masked (0.15)")
    group.add_argument("--eval-every", type=int, help="validation interval in steps")
    group.add_argument("--patience", type=int, help="early stopping after N evaluations")
    group.add_argument("--dropout", type=float, help="dropout (0.1)")
    group.add_argument("--attention-dropout", type=float, help="dropout on attention weights")
    group.add_argument("--dtype", choices=("auto", "fp32", "bf16"), help="matmul precision")
    group.add_argument("--device", help="auto, cpu, cuda, cuda:1, mps")
    group.add_argument("--objective", choices=OBJECTIVES,
                       help="mse (default), gaussian (mean and variance, NLL of the normalised "
                       "value), nb (negative binomial on raw counts, dispersion predicted per "
                       "cell and gene; the dataset must keep them) or nb_gene (the same with one "
                       "learned dispersion per gene); likelihood runs also record bits per "
                       "masked gene")


def training_config(args: argparse.Namespace, preset: str = "demo") -> TrainConfig:
    """The preset named by ``--train-preset`` (``preset`` when not given) with the given
    options applied."""
    config = TRAIN_PRESETS[args.train_preset or preset]
    changes = {
        "batch_size": args.batch, "lr": args.lr, "schedule": args.schedule,
        "mask_rate": args.mask_rate, "eval_every": args.eval_every, "patience": args.patience,
        "dropout": args.dropout, "attention_dropout": args.attention_dropout,
        "dtype": args.dtype, "device": args.device, "budget_mode": args.budget_mode,
        "converge_tol": args.converge_tol, "objective": args.objective,
    }
    changes = {key: value for key, value in changes.items() if value is not None}
    if args.steps is not None:
        changes.update(max_steps=args.steps, max_cells=None)
    if args.cells is not None:
        changes.update(max_cells=args.cells, max_steps=None)
    return config.with_(**changes)


def int_list(text: str) -> list[int]:
    """Parse ``"0,1,2"`` into integers (at least one)."""
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one integer, got {text!r}")
    return values


def seed_list(text: str) -> list[int]:
    """Parse ``"0,1,2"`` into seeds: integers from 0 to 2**32 - 1."""
    seeds = int_list(text)
    bad = [seed for seed in seeds if not 0 <= seed < 2**32]
    if bad:
        raise argparse.ArgumentTypeError(f"seeds must lie in 0 to 2**32 - 1, got {bad}")
    return seeds


def positive_int_list(text: str) -> list[int]:
    """Parse ``"1000,4000"`` into positive integers."""
    values = int_list(text)
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def name_list(text: str) -> list[str]:
    """Parse ``"XS,S"`` into names (at least one)."""
    names = [item.strip() for item in text.split(",") if item.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


# ---------------------------------------------------------------- sweep
def _register_sweep(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep", help="train a ladder (sizes x seeds x data sizes) and append to results.parquet"
    )
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", type=Path, help="a dataset directory from `scalelib data build`")
    data.add_argument("--simulate", choices=("rich", "limited"),
                      help="simulate a regime of --regime-preset instead (cached under --out)")
    data.add_argument("--rebuild-table", action="store_true",
                      help="train nothing: rebuild --out's results.parquet from the row.json "
                      "of its run directories (a damaged table is moved aside)")
    parser.add_argument("--regime-preset", default="demo", choices=("demo", "smoke", "paper"),
                        help="genes and cells of --simulate (default demo)")
    parser.add_argument("--ladder", default="demo", help="paper, demo or smoke (default demo)")
    parser.add_argument("--sizes", type=name_list, help="comma-separated size names (default all)")
    parser.add_argument("--seeds", type=seed_list, default=[0], help="comma-separated seeds (0)")
    parser.add_argument("--train-sizes", type=positive_int_list,
                        help="nested training-set sizes for a data-size sweep (e.g. 1000,4000)")
    parser.add_argument("--subsample", type=name_list, metavar="STRATEGIES",
                        help="how the nested training subsets are drawn, each an order the "
                        "dataset holds: random, rebalanced, geosketch (default: those the "
                        "dataset was built with); one sweep, one table, a row per strategy")
    parser.add_argument("--out", type=Path, default=Path("data/sweeps/default"),
                        help="sweep directory (default data/sweeps/default)")
    parser.add_argument("--rerun", action="store_true", help="retrain runs already finished")
    parser.add_argument("--memmap", action="store_true",
                        help="stream: read training batches and validation blocks from the "
                        "dataset's file instead of holding its cells in memory (for datasets "
                        "larger than memory; the baselines still load theirs, see "
                        "--no-baselines)")
    parser.add_argument("--budget-check", action="store_true",
                        help="after the sweep, rerun the two largest sizes at twice the budget "
                        "and report whether their loss moved more than the fit's uncertainty "
                        "(written to budget_check.parquet/.json, never mixed into fits)")
    parser.add_argument("--no-baselines", action="store_true",
                        help="do not fit the mean, PCA, ridge and kNN baselines (by default "
                        "they are stored once per dataset and training-set size)")
    add_workers_option(parser)
    _add_launch_options(parser)
    add_training_options(parser)
    parser.set_defaults(handler=_sweep)


def add_workers_option(parser: argparse.ArgumentParser, default: int = 1) -> None:
    """Add ``--workers`` (processes training runs at once on this machine) to ``parser``."""
    parser.add_argument("--workers", type=int, default=default,
                        help="processes training runs at once on this machine, each with its "
                        f"share of the CPU threads (default {default}; small models train "
                        "fastest one thread per process)")


def _add_launch_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "launching", "train each run in its own job through submitit (needs scalelib[cluster]); "
        "for data-parallel runs in this allocation, start the sweep with torchrun instead")
    group.add_argument("--launcher", choices=("slurm", "local"),
                       help="slurm: one Slurm job per run (a job array) and one for the "
                       "baselines; local: the same jobs as processes on this machine")
    group.add_argument("--partition", help="Slurm partition (default: the cluster's)")
    group.add_argument("--gpus-per-run", type=int, default=0,
                       help="GPUs per run; above 1 a run trains data-parallel, one process "
                       "per GPU (default 0)")
    group.add_argument("--time", type=int, default=60, dest="time_min",
                       help="time limit of each job in minutes (default 60)")


def _sweep(args: argparse.Namespace) -> int:
    from scalelib.distributed import joined

    if args.rebuild_table:
        return _rebuild_table(args.out)
    config = training_config(args)
    if args.workers != 1 and args.launcher is not None:
        raise ScalelibError("--workers and --launcher both start processes; choose one")
    if args.launcher is not None:
        return _sweep_launched(args, config)
    with joined(config.device):  # the processes torchrun started, if any (rank 0 prints)
        return _sweep_in_group(args, config)


def _plan_sweep(args: argparse.Namespace, config: TrainConfig) -> list[RunSpec]:
    """The runs ``sweep`` asks for, on its dataset (read, or simulated into ``--out``)."""
    from scalelib.data.preprocess import load_or_simulate
    from scalelib.data.store import load_dataset
    from scalelib.sweep import check_sweep_dir, plan_runs

    check_sweep_dir(args.out)
    sizes = select_sizes(get_ladder(args.ladder), args.sizes)
    if args.data is not None:  # streamed training reads no per-cell metadata
        dataset = load_dataset(args.data, obs_columns=() if args.memmap else None)
    else:
        dataset = load_or_simulate(args.simulate, args.regime_preset, args.out / "datasets")
    return plan_runs(dataset, sizes, config, seeds=args.seeds, train_sizes=args.train_sizes,
                     subsamples=args.subsample or dataset.built_subsamples)


def _sweep_in_group(args: argparse.Namespace, config: TrainConfig) -> int:
    from scalelib.distributed import launched_by_torchrun
    from scalelib.sweep import SweepCallbacks
    from scalelib.workers import run_with_workers

    if args.workers != 1 and launched_by_torchrun():
        raise ScalelibError("--workers starts its own processes; run it without torchrun")
    runs = _plan_sweep(args, config)
    trained = []
    table = run_with_workers(runs, args.out, args.workers, rerun=args.rerun,
                             in_memory=not args.memmap,
                             callbacks=SweepCallbacks(
                                 on_run_start=lambda i, n, run: trained.append(run)),
                             baselines=not args.no_baselines)
    status = _print_sweep(table, args.out, len(trained), len(runs))
    if args.budget_check:
        from scalelib.budget_check import CHECK_SUMMARY, budget_check_sentence, check_budget

        print("budget check: the largest sizes again at twice the budget")
        print(budget_check_sentence(check_budget(runs, args.out)))
        print(f"budget check: {args.out / CHECK_SUMMARY}")
    return status


def _sweep_launched(args: argparse.Namespace, config: TrainConfig) -> int:
    """``sweep --launcher``: every run in its own submitit job, then the usual summary."""
    from scalelib.distributed import launched_by_torchrun
    from scalelib.launch import LaunchOptions, launch_sweep
    from scalelib.results import read_results

    options = LaunchOptions(args.launcher, args.partition, args.gpus_per_run, args.time_min)
    if launched_by_torchrun():
        raise ScalelibError("--launcher starts its own processes; run it without torchrun")
    if args.budget_check:
        raise ScalelibError("--budget-check trains in this process; run it after the "
                            "launched sweep, without --launcher")
    runs = _plan_sweep(args, config)
    outcomes = launch_sweep(runs, args.out, options, rerun=args.rerun,
                            in_memory=not args.memmap, baselines=not args.no_baselines)
    table = read_results(args.out / "results.parquet")
    table = table.filter(table["run_id"].is_in([outcome.run_id for outcome in outcomes]))
    return _print_sweep(table, args.out, sum(o.trained for o in outcomes), len(runs))


def _print_sweep(table: pl.DataFrame, out: Path, n_trained: int, n_planned: int) -> int:
    """Print a sweep's rows, its baselines and a verdict; return the exit status."""
    import polars as pl

    from scalelib.results import print_table, read_results
    from scalelib.scaling import baseline_rows, matching_baselines

    bits = ["best_val_bits"] if table["best_val_bits"].is_not_null().any() else []
    converge = ["converged"] if (table["budget_mode"] == "converge").any() else []
    print_table(table.select("regime", "subsample", "size", "params", "seed", "n_train_cells", "steps",
                             *converge, "best_val_mse", *bits, "test_mse", "baseline_val_mse",
                             "status"))
    baselines = matching_baselines(table, baseline_rows(read_results(out / "results.parquet")))
    if baselines.height:
        print("baselines (fitted on the training cells, scored on the same masks):")
        print_table(baselines.select("subsample", "n_train_cells", "model_family", "setting",
                                     "best_val_mse", "test_mse")
                    .sort("subsample", "n_train_cells", "best_val_mse"))
    finished = table.filter(pl.col("status") == "ok")
    if finished.height and not (finished["best_val_mse"] < finished["baseline_val_mse"]).any():
        print("warning: no run beat the per-gene-mean baseline; train longer (--cells, "
              "--steps) or try another --lr")
    _print_converged(finished)
    print(f"trained {n_trained} of the {n_planned} planned runs here (the others were "
          "finished already, by another process on this directory, or repeat the random run "
          "at the whole training set)")
    print(f"results: {out / 'results.parquet'}")
    return 0 if (table["status"] == "ok").all() else 1


def _print_converged(finished: pl.DataFrame) -> None:
    """With ``--budget converge``: how many finished runs converged before the cap."""
    import polars as pl

    converge = finished.filter(pl.col("budget_mode") == "converge")
    if converge.height:
        stopped = converge.filter(~pl.col("converged").fill_null(False))
        print(f"converged: {converge.height - stopped.height} of {converge.height} runs"
              + (f"; {stopped.height} stopped at the cap ({', '.join(sorted(set(stopped['size'])))})"
                 ": raise --cells or --steps for them to converge" if stopped.height else ""))


def _rebuild_table(out: Path) -> int:
    from scalelib.sweep import rebuild_results

    table, moved_to = rebuild_results(out)
    if moved_to is not None:
        print(f"moved the unreadable table aside to {moved_to}")
    print(f"rebuilt {out / 'results.parquet'}: {table.height} runs "
          f"({(table['status'] == 'ok').sum()} ok)")
    return 0


# ---------------------------------------------------------------- demo
def _register_demo(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="the main job: simulate both regimes, train the demo ladder, fit, plot"
    )
    parser.add_argument("--out", type=Path, default=Path("data/demo"),
                        help="output directory (default data/demo)")
    parser.add_argument("--preset", default="demo", choices=("demo", "smoke"),
                        help="demo (minutes) or smoke (seconds, for a quick check)")
    parser.add_argument("--seeds", type=seed_list, default=[0], help="comma-separated seeds (0)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (1000)")
    parser.add_argument("--rerun", action="store_true", help="retrain runs already finished")
    add_workers_option(parser)
    add_training_options(parser, preset_default="that of --preset",
                         budget_note=" (the rich regime's; the limited regime gets half)")
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from scalelib.demo import print_summary, run_demo

    if args.bootstrap < 0:
        raise ScalelibError("--bootstrap must be 0 or a positive number of resamples")
    summary = run_demo(args.out, preset=args.preset, seeds=args.seeds,
                       n_bootstrap=args.bootstrap, rerun=args.rerun, workers=args.workers,
                       config=training_config(args, preset=args.preset))
    print_summary(summary)
    return 0


# ---------------------------------------------------------------- bench
def _register_bench(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="measure training throughput of one size")
    parser.add_argument("--size", default="S", help="size name from any ladder (default S)")
    parser.add_argument("--genes", type=int, default=512, help="vocabulary size V (512)")
    parser.add_argument("--batch", type=int, default=32, help="cells per step (32)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (10)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--attention-dropout", type=float,
                        help="dropout on attention weights (default: as dropout, 0.1)")
    parser.add_argument("--threads", type=int,
                        help="CPU threads for torch (default: torch's, one per core)")
    parser.add_argument("--compare-reference", action="store_true",
                        help="time a plain nn.TransformerEncoder build (fp32, dropout 0.1) "
                             "side by side on a CPU and print both, the ratio and the losses")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    import torch

    from scalelib.bench import benchmark_training

    if args.threads is not None:
        if args.threads < 1:
            raise ScalelibError("--threads must be a positive integer")
        torch.set_num_threads(args.threads)
    if args.compare_reference:
        return _bench_against_reference(args)
    result = benchmark_training(
        find_size(args.size), args.genes, args.batch, steps=args.steps, dtype=args.dtype,
        device=args.device, attention_dropout=args.attention_dropout,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"{result.size} (P={result.params:,}) V={result.n_genes} batch {result.batch_size} "
          f"on {result.device} ({result.threads} threads), {result.dtype}")
    print(f"  {result.seconds_per_step * 1e3:.1f} ms/step  {result.cells_per_s:,.1f} cells/s  "
          f"{result.tokens_per_s:,.0f} tokens/s")
    print(f"  achieved {result.achieved_flops / 1e9:,.2f} GFLOP/s of a measured "
          f"{result.dtype} matmul peak {result.peak_matmul_flops / 1e9:,.1f} GFLOP/s "
          f"(MFU {result.mfu:.1%})")
    return 0


def _bench_against_reference(args: argparse.Namespace) -> int:
    from scalelib.bench import compare_reference

    if args.device not in ("auto", "cpu"):
        raise ScalelibError("--compare-reference runs on the CPU; drop --device")
    result = compare_reference(find_size(args.size), args.genes, args.batch, steps=args.steps,
                               dtype=args.dtype, attention_dropout=args.attention_dropout)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"{result.size} V={result.n_genes} batch {result.batch_size} on {result.threads} CPU "
          f"threads, {result.steps_timed} steps each, alternating in one process, same weights, "
          "batches and masks")
    for label, seconds, loss in (
        ("nn.TransformerEncoder fp32, attention dropout 0.1", result.reference_seconds_per_step,
         result.reference_final_loss),
        (f"scalelib {result.dtype}, attention dropout {result.attention_dropout:g}",
         result.seconds_per_step, result.final_loss),
    ):
        print(f"  {label:<52} {seconds * 1e3:9.1f} ms/step {result.batch_size / seconds:9.1f} "
              f"cells/s  loss {loss:.4f}")
    difference = result.final_loss - result.reference_final_loss
    verdict = "equal within noise" if abs(difference) <= 3 * result.loss_noise else "DIFFERENT"
    print(f"  speed-up {result.speedup:.2f}x (median of per-step ratios); MFU {result.mfu:.1%} of "
          f"a measured {result.dtype} matmul peak {result.peak_matmul_flops / 1e9:,.1f} GFLOP/s")
    print(f"  loss difference {difference:+.4f} (standard error {result.loss_noise:.4f}): "
          f"{verdict}")
    return 0
