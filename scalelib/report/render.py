"""Render the Quarto project with the ``quarto`` command when it is installed.

Quarto is a separate program (https://quarto.org/docs/get-started/); its Python engine runs
the cells in a Jupyter kernel of this environment, so ``jupyter`` must be installed here too.
``scalelib`` never requires either: without them the prepared folder is still complete and
:func:`install_message` says what to install.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from scalelib.errors import ScalelibError
from scalelib.report.data import DATA_ENV

QUARTO_URL = "https://quarto.org/docs/get-started/"
REPORT_DOCUMENT = "index.qmd"
JUPYTER_MODULES = ("nbformat", "nbclient", "ipykernel")


def quarto_executable() -> str | None:
    """Path of ``quarto`` on PATH (None when absent)."""
    return shutil.which("quarto")


def missing_jupyter() -> list[str]:
    """Modules Quarto's Python engine needs that this environment lacks."""
    return [name for name in JUPYTER_MODULES if importlib.util.find_spec(name) is None]


def check_project(project: str | Path) -> Path:
    """The report project folder, or a ScalelibError naming the fix.

    Parameters
    ----------
    project
        Folder that should hold ``_quarto.yml`` and ``index.qmd``.

    Raises
    ------
    ScalelibError
        Either file is missing.
    """
    project = Path(project)
    if not (project / "_quarto.yml").is_file() or not (project / REPORT_DOCUMENT).is_file():
        raise ScalelibError(
            f"{project} is not the report project (no _quarto.yml and {REPORT_DOCUMENT}); "
            "run from the scalelib checkout or pass --project path/to/report"
        )
    return project


def render_command(project: str | Path, quarto: str = "quarto") -> list[str]:
    """The command that renders the report document in every format of the project.

    Rendering the document (not the whole project) always executes its cells, so fresh
    results are never hidden by frozen outputs; the render refreshes ``_freeze`` for later
    plain ``quarto render report/`` calls.

    Parameters
    ----------
    project
        The Quarto project (``report/``).
    quarto
        The quarto executable.
    """
    return [quarto, "render", str(Path(project) / REPORT_DOCUMENT)]


def render_report(project: str | Path, data_dir: str | Path, *, quarto: str | None = None) -> Path:
    """Run ``quarto render`` on the report with the prepared folder ``data_dir``.

    Parameters
    ----------
    project
        The Quarto project (``report/``).
    data_dir
        The folder :func:`scalelib.report.prepare.prepare_report` wrote; passed to the cells
        as ``$SCALELIB_REPORT_DATA``.
    quarto
        The quarto executable (default: the one on PATH).

    Returns
    -------
    pathlib.Path
        The folder the rendered files (``index.html``, ``index.pdf``) are written to.
    """
    project = check_project(project)
    quarto = quarto or quarto_executable()
    if quarto is None:
        raise ScalelibError(f"quarto is not on PATH; install it from {QUARTO_URL}")
    missing = missing_jupyter()
    if missing:
        raise ScalelibError(
            f"Quarto runs the report's Python cells through Jupyter, and this environment lacks "
            f"{', '.join(missing)}; pip install jupyter (into {sys.prefix}) and run again"
        )
    env = {**os.environ, DATA_ENV: str(Path(data_dir).resolve()),
           "QUARTO_PYTHON": sys.executable}
    completed = subprocess.run(render_command(project, quarto), env=env, check=False)
    if completed.returncode != 0:
        raise ScalelibError(
            f"quarto render failed (exit {completed.returncode}); its messages are above. The "
            f"prepared data are in {data_dir}; fix the cause and run again"
        )
    return project


def install_message(data_dir: str | Path, project: str | Path, rerun: str) -> str:
    """What to do when quarto is not on PATH (several plain lines).

    Parameters
    ----------
    data_dir
        The prepared folder.
    project
        The Quarto project.
    rerun
        The ``scalelib report ...`` command to run once Quarto is installed.
    """
    data_dir = Path(data_dir)
    return "\n".join([
        (f"The report data are prepared in {data_dir} (numbers.json, results.parquet, "
         "fits.json, manifests/), but Quarto is not installed, so nothing was rendered."),
        f"To render the report as HTML and PDF: install Quarto from {QUARTO_URL}",
        "  (it bundles Pandoc and Typst; no LaTeX is needed; on Debian or Ubuntu: download",
        "  quarto-<version>-linux-amd64.deb from https://github.com/quarto-dev/quarto-cli/releases",
        "  and `sudo dpkg -i` it), then run again:",
        *([f"  {sys.executable} -m pip install jupyter"] if missing_jupyter() else []),
        f"  {rerun}",
        (f"or render by hand: SCALELIB_REPORT_DATA={data_dir.resolve()} "
         f"quarto render {Path(project) / REPORT_DOCUMENT}"),
    ])

