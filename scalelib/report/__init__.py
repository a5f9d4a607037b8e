"""The Quarto report: gather results, compute the quoted numbers, build figures and tables.

The report (``report/index.qmd``) reads only a prepared folder, never training code::

    scalelib report --results data/demo        # prepare report/_data, then quarto render

``prepare`` (:func:`prepare_report`) copies the results table, the fits (from the results
directory's ``fits.json`` or computed) and the dataset manifests into the folder and writes
``numbers.json`` with every number the report quotes. The document holds the report's words;
its cells are thin calls: :func:`load_report` reads the folder (a ``data`` parameter,
``$SCALELIB_REPORT_DATA`` or ``_data`` beside the document), :mod:`scalelib.report.figures`
builds figures from :mod:`scalelib.plots` charts, :mod:`scalelib.report.tables` the tables,
:mod:`scalelib.report.formatting` formats numbers for the prose, and
:mod:`scalelib.report.published` holds the reference study's published numbers, the only
numbers typed into the report. Nothing here imports torch.
"""

from scalelib.report.data import DATA_ENV, ReportData, load_report, resolve_data_dir
from scalelib.report.figures import (
    Figure,
    allocation_figure,
    data_size_figure,
    html_head,
    pergene_figure,
    probe_figure,
    scaling_figure,
    test_val_figure,
)
from scalelib.report.formatting import (
    Markdown,
    code,
    escape,
    finite,
    fmt,
    fmt_ci,
    join_words,
    percent,
    provenance_details,
    published_value,
    quoted_value,
    quotes,
    span,
    status_word,
    with_ci,
)
from scalelib.report.numbers import compute_numbers
from scalelib.report.prepare import PreparedReport, prepare_report
from scalelib.report.published import PUBLISHED
from scalelib.report.render import install_message, quarto_executable, render_report
from scalelib.report.tables import (
    Table,
    baselines_table,
    datasets_table,
    entropy_table,
    fits_table,
    joint_table,
    ladder_table,
    likelihood_table,
    published_table,
    saturation_table,
    training_table,
)
from scalelib.scaling import data_size_rows, scaling_rows

__all__ = [
    "DATA_ENV", "PUBLISHED", "Figure", "Markdown", "PreparedReport", "ReportData", "Table",
    "allocation_figure", "baselines_table", "code",
    "compute_numbers", "data_size_figure", "data_size_rows", "datasets_table", "entropy_table",
    "escape", "finite", "fits_table", "fmt", "fmt_ci", "html_head", "install_message",
    "join_words", "joint_table", "ladder_table", "likelihood_table", "load_report", "percent",
    "pergene_figure", "prepare_report", "probe_figure", "provenance_details", "published_table",
    "published_value", "quarto_executable", "quoted_value", "quotes", "render_report",
    "resolve_data_dir", "saturation_table", "scaling_figure", "scaling_rows", "span",
    "status_word", "test_val_figure", "training_table", "with_ci",
]
