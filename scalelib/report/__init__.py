"""The Quarto report: gather results, compute the quoted numbers, build figures and tables.

The report (``report/index.qmd``) reads only a prepared folder, never training code::

    scalelib report --results data/demo        # prepare report/_data, then quarto render

``prepare`` (:func:`prepare_report`) copies the results table, the fits (from the results
directory's ``fits.json`` or computed) and the dataset manifests into the folder and writes
``numbers.json`` with every number the report quotes. The document's cells are thin calls:
:func:`load_report` reads the folder (a ``data`` parameter, ``$SCALELIB_REPORT_DATA`` or
``_data`` beside the document), :mod:`scalelib.report.figures` builds figures and tables from
:mod:`scalelib.plots` charts, :mod:`scalelib.report.text` writes the generated paragraphs, and
:mod:`scalelib.report.published` holds the reference study's published numbers, the only
numbers typed into the report. Nothing here imports torch.
"""

from scalelib.report.data import DATA_ENV, ReportData, load_report, resolve_data_dir
from scalelib.report.figures import (
    Figure,
    Table,
    data_size_figure,
    data_size_section,
    datasets_table,
    entropy_table,
    fits_table,
    html_head,
    joint_table,
    ladder_table,
    published_table,
    scaling_figure,
    test_val_figure,
    training_table,
)
from scalelib.report.numbers import compute_numbers
from scalelib.report.prepare import PreparedReport, prepare_report
from scalelib.report.published import PUBLISHED
from scalelib.report.render import install_message, quarto_executable, render_report
from scalelib.report.text import (
    Markdown,
    comparison_markdown,
    data_markdown,
    differences_markdown,
    entropy_markdown,
    failed_markdown,
    fits_markdown,
    quotes,
    summary_markdown,
    test_val_markdown,
    training_markdown,
)
from scalelib.scaling import data_size_rows, scaling_rows

__all__ = [
    "DATA_ENV", "PUBLISHED", "Figure", "Markdown", "PreparedReport", "ReportData", "Table",
    "comparison_markdown", "compute_numbers", "data_markdown", "data_size_figure",
    "data_size_rows", "data_size_section", "datasets_table", "differences_markdown",
    "entropy_markdown", "entropy_table", "failed_markdown", "fits_markdown", "fits_table",
    "html_head", "install_message", "joint_table", "ladder_table", "load_report",
    "prepare_report", "published_table", "quarto_executable", "quotes", "render_report",
    "resolve_data_dir", "scaling_figure", "scaling_rows", "summary_markdown",
    "test_val_figure", "test_val_markdown", "training_markdown", "training_table",
]
