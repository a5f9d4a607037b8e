"""Inspect a dataset: gene selection, expression, sparsity, composition, splits, embedding.

    marimo edit notebooks/data.py                          # a simulated demo regime
    marimo edit notebooks/data.py -- --dataset DIR         # a built dataset directory
    python notebooks/data.py -- --preset smoke             # headless (as the tests run it)

Command-line options (after ``--``): ``--preset smoke|demo|paper`` (size of the simulated
regimes; default demo), ``--datasets DIR`` (where simulated regimes are kept; default
data/demo/datasets for the demo preset, data/notebook/<preset>/datasets otherwise, shared with
the scaling notebook), ``--dataset DIR`` (open this dataset first) and
``--embedding pca|umap``.
"""

# ruff: noqa: PLR1711, B018  (marimo cells end in `return` and display their last expression)

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="scalelib: dataset")


@app.cell
def _():
    from pathlib import Path

    import marimo as mo

    from scalelib.config import notebook_sweep_dir
    from scalelib.data.preprocess import load_or_simulate
    from scalelib.data.store import load_dataset
    from scalelib.errors import ScalelibError
    from scalelib.explore import datacharts, dataview
    from scalelib.explore.sweeps import list_datasets

    return (
        Path,
        ScalelibError,
        datacharts,
        dataview,
        list_datasets,
        load_dataset,
        load_or_simulate,
        mo,
        notebook_sweep_dir,
    )


@app.cell
def _(Path, mo, notebook_sweep_dir):
    args = mo.cli_args()
    preset = str(args.get("preset") or "demo")
    datasets_dir = Path(str(args.get("datasets") or notebook_sweep_dir(preset) / "datasets"))
    start_dataset = str(args.get("dataset") or "")
    start_embedding = str(args.get("embedding") or (
        "umap" if mo.app_meta().mode in ("edit", "run") and preset != "smoke" else "pca"))
    return datasets_dir, preset, start_dataset, start_embedding


@app.cell
def _(mo):
    mo.md("""
    # A dataset, before training

    A dataset is raw counts reduced to a vocabulary of highly variable genes (seurat_v3 on
    the training cells' counts), normalised to 10,000 counts per cell, log1p-transformed
    and split 90/5/5 into train, validation and test cells.
    """)
    return


@app.cell
def _(datasets_dir, list_datasets, mo, preset, start_dataset, start_embedding):
    _simulated = {f"simulated {regime} regime ({preset})": f"simulated:{regime}"
                  for regime in ("rich", "limited")}
    _built = {str(path): str(path) for path in list_datasets("data")
              if path.parent != datasets_dir}
    _options = {**_simulated, **_built}
    if start_dataset:
        _options.setdefault(start_dataset, start_dataset)
    choice = mo.ui.dropdown(options=_options, value=start_dataset or next(iter(_simulated)),
                            label="Dataset")
    embedding_method = mo.ui.dropdown(["pca", "umap"], value=start_embedding,
                                      label="Embedding (UMAP compiles numba on first use)")
    max_cells = mo.ui.slider(500, 20_000, step=500, value=2000, label="Cells to embed")
    mo.hstack([choice, embedding_method, max_cells], justify="start", wrap=True)
    return choice, embedding_method, max_cells


@app.cell
def _(Path, choice, datasets_dir, dataview, load_dataset, load_or_simulate, mo, preset):
    with mo.status.spinner(title="Opening (or simulating) the dataset"):
        if choice.value.startswith("simulated:"):
            dataset = load_or_simulate(choice.value.split(":", 1)[1], preset, datasets_dir)
        else:
            dataset = load_dataset(Path(choice.value))
    mo.ui.table([{"field": k, "value": str(v)} for k, v in dataview.overview(dataset).items()],
                selection=None, label="Overview")
    return (dataset,)


@app.cell
def _(ScalelibError, datacharts, dataset, dataview, mo):
    _top = 25  # rows of the gene table, all on one page
    try:
        _hvg = dataview.hvg_table(dataset)
        _view = mo.vstack([
            mo.ui.altair_chart(datacharts.mean_variance_chart(_hvg), chart_selection=False),
            mo.ui.table(_hvg.head(_top), selection=None, page_size=_top,
                        format_mapping={k: "{:.4g}" for k in ("means", "variances",
                                                               "variances_norm")},
                        label="Top candidates by normalised variance"),
        ])
    except ScalelibError as error:  # a dataset without HVG statistics still shows the rest
        _view = mo.callout(mo.md(str(error)), kind="warn")
    mo.vstack([mo.md("## Highly variable genes"), _view])
    return


@app.cell
def _(datacharts, dataset, dataview, mo):
    mo.vstack([
        mo.md("## Expression and sparsity"),
        mo.hstack([
            datacharts.value_histogram_chart(dataview.value_histogram(dataset)),
            datacharts.sparsity_chart(dataview.gene_summary(dataset)),
        ], wrap=True),
        datacharts.cells_chart(dataview.cell_summary(dataset)),
    ])
    return


@app.cell
def _(dataset, dataview, mo):
    _labels = dataview.label_columns(dataset) or ["none"]  # the cell-type column first
    label_column = mo.ui.dropdown(_labels, value=_labels[0], label="Colour and compose by")
    label_column
    return (label_column,)


@app.cell
def _(datacharts, dataset, dataview, label_column, mo):
    _column = label_column.value
    _parts = [datacharts.split_chart(dataview.split_table(dataset))]
    if _column and _column != "none":
        _parts.append(datacharts.composition_chart(dataview.composition(dataset, _column),
                                                   label=_column.replace("_", " ")))
    mo.vstack([mo.md("## Splits and composition"), mo.hstack(_parts, wrap=True)])
    return


@app.cell
def _(
    datacharts,
    dataset,
    dataview,
    embedding_method,
    label_column,
    max_cells,
    mo,
):
    _column = label_column.value if label_column.value != "none" else None
    with mo.status.spinner(title=f"Embedding with {embedding_method.value.upper()} (scanpy)"):
        _points = dataview.embedding(dataset, embedding_method.value, max_cells=max_cells.value,
                                     color=_column)
    mo.vstack([
        mo.md("## Embedding"),
        mo.ui.altair_chart(datacharts.embedding_chart(
            _points, method=embedding_method.value,
            label=(_column or "all").replace("_", " ")), chart_selection=False),
    ])
    return


if __name__ == "__main__":
    app.run()
