"""The report's figures and tables: compositions of :mod:`scalelib.plots` charts and tables of
``numbers.json``, displayed the way each Quarto format needs.

A :class:`Figure` carries an Altair chart and the PNG/SVG that :func:`scalelib.plots.save_chart`
wrote. Its Jupyter display bundle holds ``text/html`` (the interactive Vega-Lite chart) and
``image/png``: Quarto's HTML output takes the HTML, Typst/PDF output the PNG. The Vega, Vega-Lite
and vega-embed JavaScript is inlined once by :func:`html_head` (from vl-convert, offline), so
the self-contained HTML page needs no network. A :class:`Table` displays as a Markdown pipe
table, which Quarto turns into a native table in every format.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import altair as alt
import polars as pl

from scalelib.errors import ScalelibError
from scalelib.plots import data_size_chart, save_chart, scaling_chart, test_vs_val_chart
from scalelib.report.data import ReportData
from scalelib.report.text import (
    Markdown,
    escape,
    fmt,
    join_words,
    percent,
    published_value,
    status_word,
    with_ci,
)

if TYPE_CHECKING:
    from scalelib.scaling import PowerLawFit

PANEL_WIDTH, PANEL_HEIGHT = 300, 220
EMBED_OPTIONS = {"actions": {"export": True, "source": False, "compiled": False,
                             "editor": False}}


# --------------------------------------------------------------------------------------------
# Display objects


@dataclass(frozen=True)
class Figure:
    """A chart with its saved PNG and SVG; displays as interactive HTML or a PNG.

    Parameters
    ----------
    label
        Quarto label (``fig-...``), also the stem of the saved files and the HTML element id.
    chart
        The Altair chart.
    files
        The PNG and SVG written by :func:`scalelib.plots.save_chart`.
    """

    label: str
    chart: alt.TopLevelMixin
    files: tuple[Path, ...] = field(default=())

    @property
    def png(self) -> Path:
        """The PNG file."""
        return next(path for path in self.files if path.suffix == ".png")

    def html(self) -> str:
        """A ``<div>`` and the script that draws the chart into it with vega-embed."""
        spec = json.dumps(self.chart.to_dict(), separators=(",", ":")).replace("</", "<\\/")
        element = f"vis-{self.label}"
        return (
            f'<div id="{element}" class="scalelib-chart"></div>\n'
            '<script type="text/javascript">\n'
            "(function (spec, options) {\n"
            f'  var element = document.getElementById("{element}");\n'
            "  if (window.vegaEmbed) { vegaEmbed(element, spec, options).catch(console.error); }\n"
            '  else { element.textContent = "vega-embed is missing: render the report with '
            'its first cell (scalelib.report.html_head)"; }\n'
            f"}})({spec}, {json.dumps(EMBED_OPTIONS)});\n"
            "</script>\n"
        )

    def _repr_mimebundle_(self, include: Collection[str] | None = None,
                          exclude: Collection[str] | None = None) -> dict[str, str]:
        return {
            "text/html": self.html(),
            "image/png": base64.b64encode(self.png.read_bytes()).decode("ascii"),
            "text/plain": f"<figure {self.label}: {', '.join(p.name for p in self.files)}>",
        }


def make_figure(chart: alt.TopLevelMixin, label: str, figures_dir: Path) -> Figure:
    """Save ``chart`` as ``figures_dir/label.png`` and ``.svg`` and wrap it as a Figure.

    Parameters
    ----------
    chart
        The Altair chart.
    label
        Quarto label (``fig-...``), the stem of the saved files.
    figures_dir
        Folder of the saved files (created when missing).
    """
    return Figure(label, chart, tuple(save_chart(chart, Path(figures_dir) / label)))


@dataclass(frozen=True)
class Table:
    """Rows of text shown as a Markdown pipe table (a native table in HTML and Typst)."""

    label: str
    frame: pl.DataFrame

    def markdown(self) -> str:
        """The pipe table."""
        def cell(value: object) -> str:
            return ("" if value is None else str(value)).replace("|", "\\|").replace("\n", " ")

        header = "| " + " | ".join(cell(c) for c in self.frame.columns) + " |"
        rule = "|" + "|".join(":---" for _ in self.frame.columns) + "|"
        body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.frame.iter_rows()]
        return "\n".join([header, rule, *body]) + "\n"

    def _repr_markdown_(self) -> str:
        return self.markdown()


def html_head() -> Markdown:
    """A raw HTML block with the vega-embed bundle (inline, offline) and the chart style.

    Place it in the report's first cell with ``output: asis``; formats other than HTML drop it.
    """
    try:
        import vl_convert
    except ImportError:
        raise ScalelibError("the report's interactive charts need vl-convert; "
                            "pip install vl-convert-python") from None
    try:  # the Vega-Lite version Altair writes specs for
        from altair.utils._importers import vl_version_for_vl_convert
        bundle = vl_convert.javascript_bundle(vl_version=vl_version_for_vl_convert())
    except (ImportError, ValueError):
        bundle = vl_convert.javascript_bundle()
    return Markdown(
        "```{=html}\n"
        "<style>.scalelib-chart { width: 100%; overflow-x: auto; }</style>\n"
        f'<script type="text/javascript">\n{bundle}\n</script>\n'
        "```\n"
    )


# --------------------------------------------------------------------------------------------
# Figures


def _fits_of(rep: ReportData, regime: str, method: str) -> list[PowerLawFit]:
    return [fit for fit in rep.fits.fits
            if fit.group.get("regime") == regime and fit.method == method]


def scaling_figure(rep: ReportData, methods: Sequence[str] | None = None) -> Figure:
    """Validation MSE against P (log-log): a panel per regime (columns) and method (rows), with
    fitted curves, bootstrap bands and the per-gene-mean baseline (``fig-scaling``).

    Parameters
    ----------
    rep
        The prepared report data (:func:`scalelib.report.data.load_report`).
    methods
        Fit methods, one row of panels each (None or empty: every method in the numbers).
    """
    methods = list(methods or rep.numbers["fitting"]["methods"])
    rows = []
    for method in methods:
        panels = [
            scaling_chart(rep.scaling.filter(pl.col("regime") == regime),
                          _fits_of(rep, regime, method), method=method,
                          title=f"{regime}: {method} fit", width=PANEL_WIDTH,
                          height=PANEL_HEIGHT)
            for regime in rep.regimes
        ]
        rows.append(alt.hconcat(*panels))
    chart = rows[0] if len(rows) == 1 else alt.vconcat(*rows)
    return make_figure(chart, "fig-scaling", rep.figures_dir)


def test_val_figure(rep: ReportData) -> Figure:
    """Test MSE against validation MSE of every finished run (``fig-test-val``).

    Parameters
    ----------
    rep
        The prepared report data (:func:`scalelib.report.data.load_report`).
    """
    return make_figure(test_vs_val_chart(rep.results), "fig-test-val", rep.figures_dir)


def data_size_figure(rep: ReportData) -> Figure | None:
    """Validation MSE against training cells D per regime with a data-size sweep, with the
    joint fit L(N, D) where it converged (``fig-data-size``); None without a sweep.

    Parameters
    ----------
    rep
        The prepared report data (:func:`scalelib.report.data.load_report`).
    """
    rows = rep.data_size
    if not rows.height:
        return None
    panels = []
    for entry in rep.numbers["data_size"]:
        regime = entry["regime"]
        joint = [fit for fit in rep.fits.joint_fits
                 if fit.group.get("regime") == regime and fit.status != "error"]
        panels.append(data_size_chart(rows.filter(pl.col("regime") == regime), joint or None,
                                      title=f"{regime}: validation MSE against training cells",
                                      width=PANEL_WIDTH + 60, height=PANEL_HEIGHT))
    chart = panels[0] if len(panels) == 1 else alt.hconcat(*panels)
    return make_figure(chart, "fig-data-size", rep.figures_dir)


# --------------------------------------------------------------------------------------------
# Tables


def datasets_table(rep: ReportData) -> Table:
    """One row per regime: source, V, cells per split, split design, fingerprint.

    Parameters
    ----------
    rep
        The prepared report data (:func:`scalelib.report.data.load_report`).
    """
    rows = []
    census = any(r["dataset"].get("census_version") for r in rep.numbers["regimes"])
    for regime in rep.numbers["regimes"]:
        dataset = regime["dataset"]
        split = (dataset.get("split") or {}).get("method") or "not recorded"
        row = {"Regime": regime["regime"], "Source": regime["source"]}
        if census:
            row["Census version"] = str(dataset.get("census_version") or "")
        row.update({
            "Genes V": fmt(regime["n_genes"]), "Train cells D": fmt(regime["n_train_cells"]),
            "Validation": fmt(regime["n_val_cells"]), "Test": fmt(regime["n_test_cells"]),
            "Split": split, "Fingerprint": ", ".join(regime["fingerprints"]),
        })
        rows.append(row)
    return Table("tbl-datasets", pl.DataFrame(rows))


def ladder_table(rep: ReportData) -> Table:
    """Model sizes with their shape and parameter count P in each regime.

    Parameters
    ----------
    rep
        The prepared report data (:func:`scalelib.report.data.load_report`).
    """
    rows = []
    for size in rep.numbers["ladder"]:
        row = {"Size": size["size"], "d_model": fmt(size["d_model"]),
               "Layers": fmt(size["n_layers"]), "Heads": fmt(size["n_heads"]),
               "FF multiple": fmt(size["ff_mult"])}
        for regime in rep.regimes:
            row[f"P ({regime})"] = fmt(size["params"].get(regime))
        rows.append(row)
    return Table("tbl-ladder", pl.DataFrame(rows))


def training_table(rep: ReportData) -> Table:
    """Per regime: runs, seeds, optimiser steps, cells seen, early stops.

    Parameters
    ----------
    rep
        The prepared report data (:func:`scalelib.report.data.load_report`).
    """
    rows = [{
        "Regime": r["regime"], "Runs": fmt(r["n_runs"]), "Sizes": join_words(r["sizes"]),
        "Seeds": join_words(r["seeds"]), "Steps": _span(r["steps"]),
        "Budget (steps)": _span(r["budget_steps"]), "Cells seen": _span(r["cells_seen"]),
        "Stopped early": fmt(r["stopped_early"]),
    } for r in rep.numbers["regimes"]]
    return Table("tbl-training", pl.DataFrame(rows))


def _span(values: dict) -> str:
    low, high = values.get("min"), values.get("max")
    return fmt(low) if low == high else f"{fmt(low)} to {fmt(high)}"


def fits_table(rep: ReportData) -> Table:
    """alpha, a, c and R^2 with bootstrap intervals per regime and fit method.

    Parameters
    ----------
    rep
        The prepared report data (:func:`scalelib.report.data.load_report`).
    """
    rows = []
    for regime in rep.numbers["regimes"]:
        for method, fit in regime["fits"].items():
            ci = fit.get("ci") or {}
            rows.append({
                "Regime": regime["regime"], "Method": method, "Runs": fmt(fit["n_runs"]),
                "α": with_ci(fit["alpha"], ci.get("alpha")),
                "a": with_ci(fit["a"], ci.get("a")),
                "c": with_ci(fit["c"], ci.get("c")),
                "R²": fmt(fit["r2"]),
                "R² of log L": with_ci(fit["r2_log"], ci.get("r2_log")),
                "Status": status_word(fit["status"]),
            })
    return Table("tbl-fits", pl.DataFrame(rows))


def entropy_table(rep: ReportData) -> Table:
    """The floor c and its entropy in bits per masked gene, with intervals.

    Parameters
    ----------
    rep
        The prepared report data (:func:`scalelib.report.data.load_report`).
    """
    rows = []
    for regime in rep.numbers["regimes"]:
        for method, fit in regime["fits"].items():
            ci = fit.get("ci") or {}
            defined = fit["status"] != "no_floor"
            rows.append({
                "Regime": regime["regime"], "Method": method,
                "c": with_ci(fit["c"], ci.get("c")),
                "Bits per masked gene": with_ci(fit["bits"], ci.get("bits")) if defined
                else "undefined (no floor)",
            })
    return Table("tbl-entropy", pl.DataFrame(rows))


def published_table(rep: ReportData) -> Table:
    """The published numbers (labelled) beside our grid and Huber fits of the same regimes.

    Parameters
    ----------
    rep
        The prepared report data (:func:`scalelib.report.data.load_report`).
    """
    numbers = rep.numbers
    citation = numbers["published"]["citation"]
    rows = []

    def row(who: str, regime: str, runs: str, method: str, values: dict) -> dict:
        return {"Source": who, "Regime": regime, "Runs": runs, "Method": method,
                "α": values.get("alpha", ""), "R²": values.get("r2", ""),
                "c": values.get("c", ""), "Bits": values.get("bits", "")}

    for entry in numbers["published"]["entries"]:
        runs = entry["runs"] + (f" ({published_value(numbers, entry['key'], 'n_runs')})"
                                if "n_runs" in entry else "")
        values = {field: published_value(numbers, entry["key"], field)
                  for field in ("alpha", "r2", "c", "bits") if field in entry}
        rows.append(row(f"published: {citation}", entry["regime"], runs, entry["method"], values))
    for regime in numbers["regimes"]:
        for method, fit in regime["fits"].items():
            defined = fit["status"] != "no_floor"
            values = {"alpha": fmt(fit["alpha"]), "r2": fmt(fit["r2"]), "c": fmt(fit["c"]),
                      "bits": fmt(fit["bits"]) if defined else "undefined"}
            rows.append(row("this report", regime["regime"], f"all ({fmt(fit['n_runs'])})",
                            method, values))
    return Table("tbl-published", pl.DataFrame(rows))


def joint_table(rep: ReportData) -> Table:
    """Joint fits L(N, D) = E + A/N^alpha + B/D^beta per regime with a data-size sweep.

    Parameters
    ----------
    rep
        The prepared report data (:func:`scalelib.report.data.load_report`).
    """
    rows = []
    for entry in rep.numbers["data_size"]:
        fit = entry["joint"]
        rows.append({
            "Regime": entry["regime"], "Runs": fmt(entry["n_runs"]),
            "D values": join_words(fmt(d) for d in entry["train_sizes"]),
            "E": fmt(fit["E"]), "A": fmt(fit["A"]), "α": fmt(fit["alpha"]),
            "B": fmt(fit["B"]), "β": fmt(fit["beta"]), "R² of log L": fmt(fit["r2_log"]),
            "Status": status_word(fit["status"]),
        })
    return Table("tbl-data-size", pl.DataFrame(rows))


# --------------------------------------------------------------------------------------------
# The data-size section (present only when the results hold a data-size sweep)


def data_size_section(rep: ReportData) -> list[Markdown | Figure]:
    """The data-size section's body as parts to display in order (a cell with ``output: asis``).

    With a data-size sweep: prose and the opening of the ``fig-data-size`` figure div, the
    :class:`Figure` (HTML chart or PNG, as Quarto picks per format), then the caption, the
    closing of the div and the ``tbl-data-size`` table. Without one: a single sentence.

    Parameters
    ----------
    rep
        The prepared report data (:func:`scalelib.report.data.load_report`).
    """
    entries = rep.numbers["data_size"]
    figure = data_size_figure(rep)
    if figure is None or not entries:
        return [Markdown("These results hold no data-size sweep (runs of one dataset at several "
                         "training-set sizes D), so L(N, D) is not fitted here. "
                         "`scalelib sweep --train-sizes ...` adds one.\n")]
    level = percent(rep.numbers["fitting"]["ci_level"])
    sentences = []
    for entry in entries:
        fit = entry["joint"]
        text = (f"**{entry['regime']}**: {fmt(entry['n_runs'])} runs of "
                f"{join_words(entry['sizes'])} at D = "
                f"{join_words(fmt(d) for d in entry['train_sizes'])} training cells. ")
        if fit["status"] == "error":
            text += f"The joint fit was not possible: {escape(fit['message'])}"
        else:
            text += (f"The joint fit gives E = {fmt(fit['E'])}, α = {fmt(fit['alpha'])} and "
                     f"β = {fmt(fit['beta'])} (R² of log L = {fmt(fit['r2_log'])}; status "
                     f"{status_word(fit['status'])}).")
        sentences.append(text)
    caption = ("Validation MSE against training cells D (log-log) for the data-size sweep: "
               "points are runs, solid lines join seed means per model size, dashed lines "
               "the joint fit L(N, D) where it was possible.")
    table_caption = (f"Joint fits L(N, D) = E + A N^−α^ + B D^−β^ to the data-size runs "
                     f"(point estimates; no {level} intervals for the joint fit).")
    opening = Markdown(
        "The nested training subsets of a dataset share its genes, validation and test cells, "
        "so these runs differ only in D and P (@fig-data-size, @tbl-data-size).\n\n"
        + "\n\n".join(sentences) + f"\n\n::: {{#{figure.label}}}\n\n")
    closing = Markdown(f"\n\n{caption}\n\n:::\n\n{joint_table(rep).markdown()}"
                       f"\n: {table_caption} {{#tbl-data-size}}\n")
    return [opening, figure, closing]
