"""The report's figures: compositions of :mod:`scalelib.plots` charts, displayed the way each
Quarto format needs (tables: :mod:`scalelib.report.tables`).

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

from scalelib.chartrows import probe_panels
from scalelib.errors import ScalelibError
from scalelib.plots import (
    allocation_chart,
    data_size_chart,
    pergene_chart,
    probe_charts,
    save_chart,
    scaling_chart,
    test_vs_val_chart,
)
from scalelib.report.data import ReportData
from scalelib.report.formatting import Markdown
from scalelib.scaling import baseline_rows

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
    fitted curves, bootstrap bands, the baselines scored on the same cells and each fit's
    verdict (``fig-scaling``).

    Parameters
    ----------
    rep
        The prepared report data (:func:`scalelib.report.data.load_report`).
    methods
        Fit methods, one row of panels each (None or empty: every method in the numbers).
    """
    methods = list(methods or rep.numbers["fitting"]["methods"])
    baselines = baseline_rows(rep.results)
    rows = []
    for method in methods:
        panels = [
            scaling_chart(rep.scaling.filter(pl.col("regime") == regime),
                          _fits_of(rep, regime, method), method=method, baselines=baselines,
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


def pergene_figure(rep: ReportData) -> Figure | None:
    """Per-gene validation error of the best model of each size, one row of panels per regime
    (``fig-pergene``); None when the results directory had no per-gene table.

    Parameters
    ----------
    rep
        The prepared report data (:func:`scalelib.report.data.load_report`).
    """
    table = rep.pergene
    if table is None or not table.height:
        return None
    largest = pl.col("n_train_cells") == pl.col("n_train_cells").max().over("dataset_fingerprint")
    table = table.filter(largest)
    panels = [pergene_chart(table.filter(pl.col("regime") == regime), title=regime,
                            width=PANEL_WIDTH, height=PANEL_HEIGHT)
              for regime in table["regime"].unique(maintain_order=True).to_list()]
    chart = panels[0] if len(panels) == 1 else alt.vconcat(*panels)
    return make_figure(chart, "fig-pergene", rep.figures_dir)


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
        joint = [fit for fit in rep.fits.joint_fits
                 if fit.group == entry["group"] and fit.status != "error"]
        panels.append(data_size_chart(_group_rows(rows, entry["group"]), joint or None,
                                      title=f"{_group_title(entry)}: validation MSE against "
                                      "training cells",
                                      width=PANEL_WIDTH + 60, height=PANEL_HEIGHT))
    return make_figure(_wrapped(panels), "fig-data-size", rep.figures_dir)


def allocation_figure(rep: ReportData) -> Figure | None:
    """Per joint fit with an allocation: loss against D per model size from the fit, where
    more parameters stop paying, and the compute-optimal frontier (``fig-allocation``); None
    when no joint fit allows one.

    Parameters
    ----------
    rep
        The prepared report data (:func:`scalelib.report.data.load_report`).
    """
    panels = []
    for entry in rep.numbers["data_size"]:
        fit = next((f for f in rep.fits.joint_fits if f.group == entry["group"]), None)
        if entry.get("allocation") and fit is not None:
            panels.append(allocation_chart(
                _group_rows(rep.data_size, entry["group"]), fit,
                tolerance=entry["allocation"]["tolerance"],
                title=f"{_group_title(entry)}: data, model size and compute",
                width=PANEL_WIDTH + 60, height=PANEL_HEIGHT))
    if not panels:
        return None
    return make_figure(_wrapped(panels), "fig-allocation", rep.figures_dir)


def _group_rows(rows: pl.DataFrame, group: dict) -> pl.DataFrame:
    for column, value in group.items():
        rows = rows.filter(pl.col(column) == value)
    return rows


def _group_title(entry: dict) -> str:
    return entry["regime"] + (f", {entry['subsample']} subsets" if entry.get("subsample") else "")


def _wrapped(panels: list, columns: int = 2) -> alt.TopLevelMixin:
    """One panel, a row of two, or rows of two panels."""
    if len(panels) == 1:
        return panels[0]
    rows = [alt.hconcat(*panels[i:i + columns]) for i in range(0, len(panels), columns)]
    return rows[0] if len(rows) == 1 else alt.vconcat(*rows)


def probe_figure(rep: ReportData, classifier: str = "logreg") -> Figure | None:
    """Probe macro F1 against training cells D per size, with saturation points, and against
    parameters P, with the PCA and expression probes as references (``fig-probes``); None
    without probes.

    Parameters
    ----------
    rep
        The prepared report data (:func:`scalelib.report.data.load_report`).
    classifier
        ``logreg`` or ``knn``.
    """
    entry = rep.numbers.get("probes")
    if not entry:
        return None
    from scalelib.scaling.saturation import saturation_points

    probes = rep.probes
    saturation = saturation_points(probes, n_bootstrap=entry["n_bootstrap"])
    charts = probe_charts(probes, saturation, width=PANEL_WIDTH, height=PANEL_HEIGHT)
    rows = []
    for panel, _, _ in probe_panels(probes):
        rows.append(alt.hconcat(*[chart for name, chart in charts.items()
                                  if name.startswith(f"{panel} {classifier} ")]))
    chart = rows[0] if len(rows) == 1 else alt.vconcat(*rows)
    return make_figure(chart, "fig-probes", rep.figures_dir)
