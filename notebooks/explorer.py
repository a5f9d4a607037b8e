"""Explore a sweep's results and refit the scaling law, in the browser or locally.

    marimo edit notebooks/explorer.py -- --results data/demo    # locally, any sweep directory
    scalelib export notebooks --out exports                     # exports/explorer/: a WASM app

This notebook imports only the standard library, marimo and scalelib's pure-Python modules
(``scalelib.explore.purefit``, ``vegalite`` and ``bundle``), so ``marimo export html-wasm``
runs it in the browser under Pyodide with no server: its data come from
``public/explorer-data.json`` next to the exported page, written by ``scalelib export``.
"""

# ruff: noqa: PLR1711  (marimo cells end in `return`)
import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="scalelib: results explorer")


@app.cell
def _():
    from pathlib import Path

    import marimo as mo

    from scalelib import chartspec
    from scalelib.explore import purefit, vegalite
    from scalelib.explore.bundle import BUNDLE_NAME, load_bundle

    return BUNDLE_NAME, Path, chartspec, load_bundle, mo, purefit, vegalite


@app.cell
def _(BUNDLE_NAME, Path, load_bundle, mo):
    _given = mo.cli_args().get("results")
    _public = mo.notebook_location() / "public" / BUNDLE_NAME
    _exported = str(_public).startswith(("http://", "https://")) or Path(str(_public)).exists()
    bundle = load_bundle(_given or (_public if _exported else "data/demo"))
    mo.md(
        f"""
        # Scaling-law explorer

        **{len(bundle.ok_rows)} finished runs** from `{bundle.meta.get("source", "?")}`
        (scalelib {bundle.meta.get("scalelib_version", "?")}, {bundle.meta.get("created", "")}).
        Choose the runs and the fit; the power law `L = a P^-alpha + c` is refitted here, in
        pure Python, with a percentile bootstrap over runs. `c` in bits per masked gene is
        `0.5 log2(2 pi e c)`.
        """
    )
    return (bundle,)


@app.cell
def _(bundle, mo):
    regimes = mo.ui.multiselect(bundle.values("regime"), value=bundle.values("regime"),
                                label="Regimes")
    leave_out = mo.ui.multiselect(bundle.sizes, value=[], label="Sizes left out of the fit")
    y_column = mo.ui.dropdown({"validation MSE": "best_val_mse", "test MSE": "test_mse"},
                              value="validation MSE", label="Loss")
    x_column = mo.ui.dropdown({"parameters": "params", "training FLOPs": "train_flops"},
                              value="parameters", label="Scale")
    method = mo.ui.dropdown(["huber", "grid"], value="huber", label="Fit")
    n_bootstrap = mo.ui.slider(0, 500, step=25, value=100, label="Bootstrap resamples")
    seed = mo.ui.number(start=0, stop=10_000, value=0, label="Bootstrap seed")
    mo.vstack([
        mo.hstack([regimes, leave_out], justify="start", wrap=True),
        mo.hstack([y_column, x_column, method], justify="start", wrap=True),
        mo.hstack([n_bootstrap, seed], justify="start", wrap=True),
    ])
    return leave_out, method, n_bootstrap, regimes, seed, x_column, y_column


@app.cell
def _(bundle, leave_out, regimes):
    shown = [row for row in bundle.scaling_rows if row.get("regime") in regimes.value]
    fitted = [row for row in shown if row.get("size") not in leave_out.value]
    return fitted, shown


@app.cell
def _(bundle, fitted, method, mo, n_bootstrap, purefit, regimes, seed, x_column, y_column):
    with mo.status.progress_bar(total=max(1, len(regimes.value) * n_bootstrap.value),
                                title="Refitting (bootstrap)", remove_on_exit=True) as _bar:
        refits = purefit.fit_rows(fitted, x=x_column.value, y=y_column.value, by=("regime",),
                                  methods=(method.value,), n_bootstrap=n_bootstrap.value,
                                  seed=seed.value, baselines=bundle.baseline_rows,
                                  on_resample=_bar.update)
    if mo.app_meta().mode == "script":
        print(f"refitted {len(refits)} fits to {len(fitted)} runs")
    return (refits,)


@app.cell
def _(bundle, mo, n_bootstrap, purefit, refits, seed, shown, vegalite, x_column, y_column):
    _baseline = "baseline_val_mse" if y_column.value == "best_val_mse" else "baseline_test_mse"
    mo.vstack([
        mo.md("## Scaling"),
        vegalite.scaling_spec(shown, refits, x=x_column.value, y=y_column.value,
                              baselines=bundle.baseline_rows, baseline=_baseline),
        mo.md("**Refitted here**, in your browser, to the runs and settings chosen above "
              f"(pure-Python optimiser; {n_bootstrap.value} bootstrap resamples, seed "
              f"{seed.value}; 95% intervals). It follows your choices; the stored fits below "
              "stay as the sweep was summarised. With the same runs, loss and scale the "
              "estimates agree with the stored ones (the grid exactly, huber to optimiser "
              "tolerance); the intervals differ by bootstrap noise and resample count."),
        mo.ui.table(purefit.summary_rows(refits), selection=None),
        mo.md(purefit.BITS_NOTE),
    ])
    return


@app.cell
def _(bundle, mo, purefit):
    mo.stop(not bundle.fits)

    def _resamples(fits):
        return ", ".join(sorted({str(fit.n_bootstrap) for fit in fits}))

    mo.vstack([
        mo.md(f"**Stored fits** ({bundle.meta.get('fits_source', 'fits.json')}): fitted by "
              f"scalelib when the sweep was summarised, `{bundle.meta.get('y')}` against "
              f"`{bundle.meta.get('x')}` on all sizes with scipy's optimiser and "
              f"{_resamples(bundle.fits)} bootstrap resamples."),
        mo.ui.table(purefit.summary_rows(bundle.fits), selection=None),
    ])
    return


@app.cell
def _(bundle, mo, shown, vegalite, y_column):
    mo.stop(not bundle.has_data_sweep)
    mo.vstack([mo.md("## Data size"),
               vegalite.data_size_spec(shown, y=y_column.value)])
    return


@app.cell
def _(bundle, chartspec, mo, vegalite):
    mo.stop(not bundle.allocations)
    mo.vstack([
        mo.md("## Data, model size and compute\nFrom the joint fit `L(N, D) = E + A/N^alpha + "
              "B/D^beta` of each regime's data-size runs (fitted when the data file was "
              "written, not refitted here): the fitted loss against training cells per model "
              "size, where doubling the model gains less than a tenth of what doubling the data "
              "gains (diamonds), and the compute-optimal (N, D) for FLOP budgets (black), with "
              "FLOPs per cell from the model."),
        *[vegalite.VegaLite(chartspec.frontier_spec(**rows)) for rows in bundle.allocations],
    ])
    return


@app.cell
def _(bundle, chartspec, mo, vegalite):
    mo.stop(not bundle.probes)
    _charts = {name: vegalite.VegaLite(chartspec.probe_spec(**rows))
               for name, rows in bundle.probes["charts"].items()}
    mo.vstack([
        mo.md(f"## Downstream probes\nLogistic-regression and kNN probes of "
              f"`{bundle.probes['label']}` on each run's mean-pooled cell embedding, scored by "
              "macro F1 (`scalelib probe`); dashed: the same probes on PCA of the expression "
              "and on the expression itself. Split: " + "; ".join(bundle.probes["split"]) + "."),
        mo.ui.tabs(_charts),
        mo.md("Saturation point per size (the smallest D within 95% of its best F1, with a "
              "95% interval over test cells and seeds):"),
        mo.ui.table(bundle.probes["saturation"], selection=None),
    ])
    return


@app.cell
def _(mo, shown):
    _columns = ("regime", "size", "params", "seed", "n_train_cells", "steps", "best_val_mse",
                "test_mse", "baseline_val_mse", "wall_time_s")
    _floats = ("best_val_mse", "test_mse", "baseline_val_mse", "wall_time_s")

    def _four_digits(value):
        return "" if value is None else f"{value:.4g}"

    mo.vstack([mo.md("## Runs"),
               mo.ui.table([{k: row.get(k) for k in _columns} for row in shown],
                           selection=None, page_size=20,
                           format_mapping={k: _four_digits for k in _floats})])
    return


if __name__ == "__main__":
    app.run()
