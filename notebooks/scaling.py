"""Train a ladder of models and fit the scaling law, in the rich and the limited regime.

    marimo edit notebooks/scaling.py                         # interactive (see below)
    marimo edit notebooks/scaling.py -- --preset smoke       # seconds-long settings
    python notebooks/scaling.py -- --preset smoke --out DIR  # headless: trains, fits, writes

Command-line options (after ``--``): ``--preset smoke|demo|paper`` (regimes, ladder and
training preset; default demo), ``--out DIR`` (sweep directory; default data/demo for the demo
preset, data/notebook/<preset> otherwise), ``--source DIR`` (a built dataset instead of the
simulated regimes), ``--bootstrap N`` and ``--train`` (train without pressing the button;
implied when the smoke preset runs as a script) and ``--steps N`` (budget in steps).

In ``marimo edit`` the cells have not run yet: press the run button at the bottom right (or
Ctrl/Cmd-Shift-R) to run them all. That trains nothing: finished runs are read from the sweep
directory and their stored fits from its ``fits.json``; **Train** runs the sweep and **Refit**
redoes the bootstrap fits.
"""

# ruff: noqa: PLR1711  (marimo cells end in `return`)

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="scalelib: scaling laws")


@app.cell
def _():
    from pathlib import Path

    import marimo as mo

    from scalelib import plots
    from scalelib.config import (
        LADDERS,
        REGIME_PRESETS,
        TRAIN_PRESETS,
        get_ladder,
        notebook_sweep_dir,
        select_sizes,
    )
    from scalelib.errors import ScalelibError
    from scalelib.explore import sweeps
    from scalelib.explore.purefit import BITS_NOTE
    from scalelib.results import read_results
    from scalelib.scaling import (
        baseline_rows,
        data_size_rows,
        fit_joint_table,
        scaling_rows,
        stored_or_fitted,
        write_fits,
    )
    from scalelib.sweep import run_sweep

    return (
        BITS_NOTE,
        LADDERS,
        Path,
        REGIME_PRESETS,
        ScalelibError,
        TRAIN_PRESETS,
        baseline_rows,
        data_size_rows,
        fit_joint_table,
        get_ladder,
        mo,
        notebook_sweep_dir,
        plots,
        read_results,
        run_sweep,
        scaling_rows,
        select_sizes,
        stored_or_fitted,
        sweeps,
        write_fits,
    )


@app.cell
def _(Path, mo, notebook_sweep_dir):
    args = mo.cli_args()
    preset = str(args.get("preset") or "demo")
    default_out = Path(str(args.get("out") or notebook_sweep_dir(preset)))
    auto_train = "train" in args or (preset == "smoke" and mo.app_meta().mode == "script")
    default_bootstrap = int(args.get("bootstrap") or (100 if preset == "smoke" else 1000))
    default_source = str(args.get("source") or "simulated")
    default_steps = int(args.get("steps") or 0)
    get_sweep_version, set_sweep_version = mo.state(0)
    return (
        auto_train,
        default_bootstrap,
        default_out,
        default_source,
        default_steps,
        get_sweep_version,
        preset,
        set_sweep_version,
    )


@app.cell
def _(mo):
    mo.md("""
    # Scaling laws of masked-expression transformers

    Each run trains one model size on one dataset (15% of genes masked, MSE on the masked
    genes) and keeps its best validation score. Fitting `L = a P^-alpha + c` to the runs of a
    regime gives the exponent `alpha` and the floor `c`; `c` in bits per masked gene is
    `0.5 log2(2 pi e c)`. The **rich** regime (many cells, few genes) should follow a clear
    power law; the **limited** regime (few cells, many genes) flattens.

    Choose the data and the ladder, then press **Train**. Finished runs are read from the
    sweep's results table, so reopening the notebook never retrains them, and their fits from
    its `fits.json` while it matches them (**Refit** redoes the bootstrap).
    """)
    return


@app.cell
def _(
    LADDERS,
    REGIME_PRESETS,
    TRAIN_PRESETS,
    default_bootstrap,
    default_out,
    default_source,
    default_steps,
    mo,
    preset,
    sweeps,
):
    _datasets = {str(path): str(path) for path in sweeps.list_datasets("data")}
    if default_source != sweeps.SIMULATED:  # a --source outside data/ (checked when loaded)
        _datasets.setdefault(default_source, default_source)
    source = mo.ui.dropdown(
        options={"simulated rich and limited regimes": sweeps.SIMULATED, **_datasets},
        value=("simulated rich and limited regimes" if default_source == sweeps.SIMULATED
               else default_source),
        label="Data",
    )
    regime_preset = mo.ui.dropdown(list(REGIME_PRESETS), value=preset,
                                   label="Simulated regime sizes")
    regimes = mo.ui.multiselect(["rich", "limited"], value=["rich", "limited"], label="Regimes")
    ladder = mo.ui.dropdown(list(LADDERS), value=preset, label="Ladder")
    seeds = mo.ui.multiselect([str(seed) for seed in range(5)], value=["0"], label="Seeds")
    train_preset = mo.ui.dropdown(list(TRAIN_PRESETS), value=preset, label="Training preset")
    budget_kind = mo.ui.dropdown(list(sweeps.BUDGET_KINDS),
                                 value="steps" if default_steps else "preset", label="Budget in")
    fractions = mo.ui.multiselect(["0.1", "0.25", "0.5", "1.0"], value=["1.0"],
                                  label="Training-set fractions (several: data-size sweep)")
    method = mo.ui.dropdown(["huber", "grid"], value="huber", label="Fit drawn")
    n_bootstrap = mo.ui.number(start=0, stop=5000, step=50, value=default_bootstrap,
                               label="Bootstrap resamples")
    out_dir = mo.ui.text(value=str(default_out), label="Sweep directory", full_width=True)
    train_button = mo.ui.run_button(label="Train", kind="success")
    refit_button = mo.ui.run_button(label="Refit (bootstrap)")
    return (
        budget_kind,
        fractions,
        ladder,
        method,
        n_bootstrap,
        out_dir,
        refit_button,
        regime_preset,
        regimes,
        seeds,
        source,
        train_button,
        train_preset,
    )


@app.cell
def _(budget_kind, default_steps, mo):
    budget = mo.ui.number(start=1, stop=10**9, value=default_steps or 1000, label="Budget",
                          disabled=budget_kind.value == "preset")  # the preset's own budget
    return (budget,)


@app.cell
def _(get_ladder, ladder, mo):
    _names = [size.name for size in get_ladder(ladder.value)]
    sizes = mo.ui.multiselect(_names, value=_names, label="Sizes")
    return (sizes,)


@app.cell
def _(
    budget,
    budget_kind,
    fractions,
    ladder,
    method,
    mo,
    n_bootstrap,
    out_dir,
    refit_button,
    regime_preset,
    regimes,
    seeds,
    sizes,
    source,
    train_button,
    train_preset,
):
    mo.vstack([
        mo.md("## Set-up"),
        mo.hstack([source, regime_preset, regimes], justify="start", wrap=True),
        mo.hstack([ladder, sizes], justify="start", wrap=True),
        mo.hstack([seeds, fractions], justify="start", wrap=True),
        mo.hstack([train_preset, budget_kind, budget], justify="start", wrap=True),
        mo.hstack([method, n_bootstrap, refit_button], justify="start", wrap=True),
        out_dir,
        train_button,
    ])
    return


@app.cell
def _(
    REGIME_PRESETS,
    get_ladder,
    ladder,
    mo,
    regime_preset,
    regimes,
    select_sizes,
    sizes,
    source,
    sweeps,
):
    chosen_sizes = select_sizes(get_ladder(ladder.value), list(sizes.value))
    _genes = ([REGIME_PRESETS[regime_preset.value][name].n_genes for name in regimes.value]
              if source.value == sweeps.SIMULATED else [])
    mo.vstack([
        mo.md("### The ladder" + (" (parameters at each regime's vocabulary size)"
                                  if _genes else "")),
        mo.ui.table(sweeps.ladder_table(chosen_sizes, _genes or [512]), selection=None),
    ])
    return (chosen_sizes,)


@app.cell
def _(
    Path,
    auto_train,
    budget,
    budget_kind,
    chosen_sizes,
    fractions,
    mo,
    out_dir,
    plots,
    read_results,
    regime_preset,
    regimes,
    run_sweep,
    seeds,
    set_sweep_version,
    source,
    sweeps,
    train_button,
    train_preset,
):
    _headless = mo.app_meta().mode == "script"
    if _headless and not auto_train:
        print("nothing trained: pass --train to train headless (the smoke preset trains "
              "by itself); finished runs are still read and fitted")
    mo.stop(not (train_button.value or auto_train),
            mo.md("Press **Train** to run the sweep (finished runs are skipped)."))
    _out = Path(out_dir.value)
    with mo.status.spinner(title="Loading or simulating the datasets"):
        _datasets = sweeps.load_sources(source.value, preset=regime_preset.value, out_dir=_out,
                                        regimes=list(regimes.value))
    _config = sweeps.train_config(train_preset.value, budget_kind.value, budget.value)
    _runs = sweeps.plan(_datasets, chosen_sizes, _config, seeds=[int(s) for s in seeds.value],
                        data_fractions=[float(f) for f in fractions.value],
                        regime_budgets=sweeps.uses_regime_budgets(source.value,
                                                                  budget_kind.value))
    _refusal = sweeps.budget_refusal(_runs, read_results(_out / "results.parquet"))
    if _refusal is not None and _headless:
        print(f"not trained: {_refusal}")
    mo.stop(_refusal is not None, mo.md(f"**Not trained:** {_refusal}."))
    mo.output.replace(mo.md(f"Training {len(_runs)} planned runs into `{_out}`..."))

    def _show_curves(frame):
        mo.output.replace_at_index(
            plots.curves_chart(frame, title=f"Live: {frame['regime'][0]} regime"), 0)

    with mo.status.progress_bar(total=len(_runs), title="Sweep", subtitle="starting",
                                completion_title="Sweep finished") as _overall:
        _monitor = sweeps.SweepMonitor(
            overall=_overall,
            open_run_bar=lambda run: mo.status.progress_bar(
                total=run.config.total_steps, title=run.label, remove_on_exit=True),
            on_curves=_show_curves,
        )
        _trained = run_sweep(_runs, _out, callbacks=_monitor.callbacks(), progress=False)
    set_sweep_version(lambda version: version + 1)  # the cells below re-read the results
    if _headless:
        print(f"{_trained.height} runs in {_out / 'results.parquet'}")
    mo.output.replace(mo.md(
        f"**{_trained.height} runs** of this plan are in `{_out / 'results.parquet'}` "
        f"({_monitor.frame()['run_id'].n_unique()} trained now, the rest were finished)."))
    return


@app.cell
def _(Path, baseline_rows, get_sweep_version, mo, out_dir, read_results, scaling_rows):
    get_sweep_version()  # re-read the table after each training
    results = read_results(Path(out_dir.value) / "results.parquet")
    full_rows, baselines = scaling_rows(results), baseline_rows(results)
    mo.stop(results.height == 0, mo.md(f"No finished runs in `{out_dir.value}` yet."))
    return baselines, full_rows, results


@app.cell
def _(Path, mo, out_dir, plots, results, sweeps):
    _curves = sweeps.read_curves(Path(out_dir.value), results)
    _tabs = {
        regime: plots.curves_chart(_curves.filter(_curves["regime"] == regime),
                                   title=f"Training and validation curves: {regime}")
        for regime in _curves["regime"].unique(maintain_order=True).to_list()
    }
    mo.vstack([mo.md("## Training curves"),
               mo.ui.tabs(_tabs) if _tabs else mo.md("No saved curves.")])
    return


@app.cell
def _(
    Path,
    ScalelibError,
    auto_train,
    baselines,
    full_rows,
    mo,
    n_bootstrap,
    out_dir,
    refit_button,
    stored_or_fitted,
    write_fits,
):
    _groups = full_rows["regime"].n_unique()
    fits_path = Path(out_dir.value) / "fits.json"
    try:
        with mo.status.progress_bar(total=max(1, 2 * _groups * n_bootstrap.value),
                                    title="Fitting (bootstrap)", remove_on_exit=True) as _bar:
            _stored, _why = stored_or_fitted(out_dir.value, full_rows,
                                             n_bootstrap=n_bootstrap.value,
                                             refit=refit_button.value, baselines=baselines,
                                             on_resample=_bar.update)
    except ScalelibError as _error:  # e.g. runs of two budgets in one regime
        _refused = str(_error)
    else:
        _refused = None
    if _refused is not None and mo.app_meta().mode == "script":
        print(f"no fits: {_refused}")
    mo.stop(_refused is not None, mo.md(f"**No fits:** {_refused}."))
    fits = list(_stored.fits)
    if _why is None:
        fits_note = f"read from `{fits_path}` (press **Refit** to redo them)"
    elif refit_button.value or auto_train:  # written only when asked: opening never does
        write_fits(fits, fits_path)
        fits_note = f"fitted now, as {_why}, and written to `{fits_path}`"
    else:
        fits_note = f"fitted now, as {_why}; not saved (**Refit** writes `{fits_path}`)"
    if mo.app_meta().mode == "script":
        print(f"fits of {full_rows.height} runs {'read from' if _why is None else 'in'} "
              f"{fits_path}")
    return fits, fits_note


@app.cell
def _(BITS_NOTE, baselines, fits, fits_note, full_rows, method, mo, plots, sweeps):
    _overlay = plots.scaling_chart(full_rows, fits, method=method.value, baselines=baselines,
                                   title="Validation MSE against parameters")
    _per_regime = {
        regime: plots.scaling_chart(
            full_rows.filter(full_rows["regime"] == regime),
            [fit for fit in fits if fit.group.get("regime") == regime], method=method.value,
            baselines=baselines, title=f"{regime}: validation MSE against parameters")
        for regime in full_rows["regime"].unique(maintain_order=True).to_list()
    }
    mo.vstack([
        mo.md("## Scaling"),
        mo.ui.tabs({"rich and limited": mo.ui.altair_chart(_overlay, chart_selection=False,
                                                           legend_selection=True),
                    **_per_regime}),
        mo.md(f"Fits of `L = a P^-alpha + c` with 95% bootstrap intervals, {fits_note}:"),
        mo.ui.table(sweeps.fit_readout(fits), selection=None),
        mo.md(BITS_NOTE),
    ])
    return


@app.cell
def _(ScalelibError, data_size_rows, fit_joint_table, mo, plots, results):
    _rows = data_size_rows(results)
    mo.stop(_rows.height == 0)
    _charts = {}
    for (_regime, _subsample), _part in _rows.group_by("regime", "subsample",
                                                       maintain_order=True):
        _name = _regime if _rows["subsample"].n_unique() == 1 else f"{_regime}, {_subsample}"
        _joint = [_f for _f in fit_joint_table(_part, errors="report") if _f.status != "error"]
        _panels = [plots.data_size_chart(
            _part, _joint or None, title=f"{_name}: validation MSE against training cells")]
        for _fit in _joint:  # too few points for L(N, D): the runs only
            try:
                _panels.append(plots.allocation_chart(_part, _fit, title=f"{_name}: data, "
                                                      "model size and compute (joint fit)"))
            except ScalelibError as _error:
                _panels.append(mo.md(f"No allocation: {_error}"))
        _charts[_name] = mo.vstack(_panels)
    mo.vstack([mo.md("## Data size\nSeveral training-set sizes were trained (tabs per regime "
                     "and subsample strategy); dashed lines are the joint fit "
                     "`L(N, D) = E + A/N^alpha + B/D^beta`. Below it: where doubling the "
                     "model gains less than a tenth of doubling the data (diamonds) and the "
                     "compute-optimal frontier for FLOP budgets (black), with FLOPs per cell "
                     "from the model."),
               mo.ui.tabs(_charts)])
    return


@app.cell
def _(mo):
    probe_label = mo.ui.text(value="cell_type", label="Label column")
    probe_button = mo.ui.run_button(label="Probe checkpoints")
    return probe_button, probe_label


@app.cell
def _(Path, ScalelibError, mo, out_dir, plots, probe_button, probe_label):
    from scalelib.probes import PROBES_FILE, ProbeSettings, read_probes, run_probes
    from scalelib.scaling.saturation import saturation_points

    _controls = mo.hstack([probe_label, probe_button], justify="start")
    _note = ""
    if probe_button.value:  # probing embeds cells with every checkpoint: only when asked
        with mo.status.spinner(title="Probing checkpoints") as _spinner:
            try:
                run_probes(out_dir.value, settings=ProbeSettings(label=probe_label.value),
                           on_target=lambda i, n, target: _spinner.update(
                               subtitle=f"{i + 1}/{n}: {target.label_text}"))
            except ScalelibError as _error:
                _note = f"**Probing failed:** {_error}"
    _table = read_probes(Path(out_dir.value) / PROBES_FILE)
    _probes = _table.filter(_table["label"] == probe_label.value)
    _intro = mo.md("## Downstream probes\nLogistic-regression and kNN probes of a label on each "
                   "run's mean-pooled cell embedding, fitted on the training cells and scored "
                   "by macro F1 on the test cells; dashed lines: the same probes on PCA of the "
                   "expression and on the expression itself. " + _note)
    mo.stop(_probes.height == 0, mo.vstack([_intro, _controls, mo.md(
        f"No probes of `{probe_label.value}` in `{out_dir.value}` yet: press **Probe checkpoints** "
        f"(or `scalelib probe --sweep {out_dir.value} --label {probe_label.value}`).")]))
    _saturation = saturation_points(_probes)
    mo.vstack([_intro, _controls, mo.md(f"Split: {'; '.join(_probes['split'].unique())}."),
               mo.ui.tabs(plots.probe_charts(_probes, _saturation)),
               mo.md("Saturation point per size (95% of its best F1):"),
               mo.ui.table(_saturation.drop("dataset_fingerprint"), selection=None)])
    return


@app.cell
def _(mo, plots, results):
    mo.vstack([mo.md("## Test against validation"), plots.test_vs_val_chart(results)])
    return


if __name__ == "__main__":
    app.run()
