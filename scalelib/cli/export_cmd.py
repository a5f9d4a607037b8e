"""``scalelib export notebooks``: the marimo notebooks as shareable HTML.

Writes, under ``--out`` (default ``exports``)::

    scaling.html     the scaling notebook run on a sweep directory, with its outputs
    data.html        the data notebook run on the sweep's simulated dataset
    marimo/          marimo's front end (JavaScript, CSS, fonts), copied from the installed
                     marimo package, which both pages load (--runtime cdn: left to the CDN)
    explorer/        the results explorer as a WebAssembly app (marimo export html-wasm):
                     index.html, assets/, public/explorer-data.json (the sweep's runs and fits),
                     public/wheels/ (scalelib's pure-Python modules) and pyodide/ (the Python
                     runtime and wheels, so the app opens without network; --runtime cdn
                     leaves them to the CDN)

With the default ``--runtime auto`` (or ``bundle``) nothing is fetched from the internet when
the pages open: serve the folder over HTTP (``python -m http.server --directory exports``;
browsers refuse the pages' JavaScript modules from ``file://``) and open ``scaling.html``,
``data.html`` or ``explorer/``. The explorer needs no server-side Python: fits are redone in
the browser. ``--runtime cdn`` writes smaller pages that load marimo's front end and Pyodide
from their CDNs, so they need internet to open.

Examples::

    scalelib export notebooks --out exports                       # data/demo, no training
    scalelib export notebooks --out exports --preset smoke        # trains a tiny sweep first
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from scalelib.config import notebook_sweep_dir
from scalelib.errors import ScalelibError

NOTEBOOKS = ("scaling", "data", "explorer")
RUNTIMES = ("auto", "bundle", "cdn")
ERROR_MIME = "application/vnd.marimo+error"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command."""
    parser = subparsers.add_parser(
        "export",
        help="export the marimo notebooks as HTML (with outputs) and the explorer as a WASM app",
        description="Run the scaling and data notebooks and export them as HTML with their "
        "outputs; export the results explorer as a WebAssembly app that refits in the browser.",
    )
    parser.add_argument("what", choices=("notebooks",), help="what to export")
    parser.add_argument("--out", type=Path, default=Path("exports"), metavar="DIR",
                        help="output folder (default exports)")
    parser.add_argument("--preset", default="demo", choices=("smoke", "demo", "paper"),
                        help="regimes, ladder and training preset of the notebooks (default "
                        "demo)")
    parser.add_argument("--results", type=Path, metavar="DIR",
                        help="sweep directory shown (default data/demo for the demo preset, "
                        "data/notebook/<preset> otherwise)")
    parser.add_argument("--train", action="store_true",
                        help="train missing runs while exporting (implied by --preset smoke)")
    parser.add_argument("--only", nargs="+", choices=NOTEBOOKS, default=list(NOTEBOOKS),
                        metavar="NAME", help="export only these (scaling, data, explorer)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto",
                        help="where the pages get marimo's front end and the explorer its "
                        "Python runtime: bundle them beside the pages (opens offline; the "
                        "explorer's runtime needs npm and PyPI once), cdn (smaller; needs "
                        "internet to open), or auto (bundle, else the explorer's runtime from "
                        "the CDN with a warning; default)")
    parser.add_argument("--notebooks", type=Path, default=None, metavar="DIR",
                        help="folder of the notebook sources (default: the checkout's "
                        "notebooks/)")
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Export the chosen notebooks; print where they are."""
    notebooks = args.notebooks or Path(__file__).resolve().parents[2] / "notebooks"
    missing = [name for name in args.only if not (notebooks / f"{name}.py").exists()]
    if missing:
        raise ScalelibError(f"no notebook(s) {', '.join(missing)} in {notebooks}; pass "
                            "--notebooks DIR (the checkout's notebooks/ folder)")
    results = args.results or notebook_sweep_dir(args.preset)
    train = args.train or args.preset == "smoke"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if "scaling" in args.only:
        extra = ["--train"] if train else []
        written.append(export_html(notebooks / "scaling.py", out / "scaling.html",
                                   ["--preset", args.preset, "--out", str(results), *extra]))
    if "data" in args.only:
        written.append(export_html(notebooks / "data.py", out / "data.html",
                                   ["--preset", args.preset,
                                    "--datasets", str(results / "datasets")]))
    if "explorer" in args.only:
        if (results / "results.parquet").exists():
            written.append(export_explorer(notebooks / "explorer.py", out / "explorer",
                                           results, runtime=args.runtime))
        else:
            print(f"explorer skipped: {results} has no results.parquet (run `scalelib demo`, "
                  "the scaling notebook, or pass --results)", file=sys.stderr)
    pages = [path for path in written if path.suffix == ".html"]
    if pages and args.runtime != "cdn":
        version = bundle_frontend(pages, out)
        print(f"pages: marimo {version}'s front end bundled in {out / FRONTEND_DIR} "
              "(they open without internet)")
    elif pages:
        print("pages: marimo's front end loads from its CDN (they need internet to open)")
    print("exported:")
    for path in written:
        print(f"  {path}")
    print(f"open them through a local server: python -m http.server --directory {out}")
    return 0


def marimo_command(*args: str) -> list[str]:
    """``python -m marimo ARGS`` with the current interpreter."""
    return [sys.executable, "-m", "marimo", *args]


def _environment() -> dict[str, str]:
    """The environment for marimo: this interpreter's scripts folder first on PATH (uv)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _marimo(command: list[str], what: str, cwd: Path | None = None) -> None:
    try:
        import marimo  # noqa: F401  (a clear message instead of a subprocess traceback)
    except ImportError:
        raise ScalelibError("exporting notebooks needs marimo; pip install 'scalelib[notebooks]'"
                            ) from None
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=_environment(), cwd=cwd)
    if result.returncode != 0:
        detail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise ScalelibError(f"{what} failed:\n{detail}")


def export_html(notebook: Path, target: Path, notebook_args: list[str]) -> Path:
    """Run ``notebook`` and write it with its outputs to ``target`` (marimo export html).

    Raises a ScalelibError when a cell of the exported notebook raised an error.
    """
    _marimo(marimo_command("export", "html", str(notebook), "-o", str(target), "-f",
                           "--no-include-code", "--no-sandbox", "--",
                           *notebook_args), f"marimo export html of {notebook.name}")
    errors = html_errors(target)
    if errors:
        raise ScalelibError(f"{notebook.name} ran with errors (see {target}): "
                            + "; ".join(errors[:3]))
    return target


FRONTEND_DIR = "marimo"
CDN_FRONTEND = re.compile(r"https://cdn\.jsdelivr\.net/npm/@marimo-team/frontend@[^/\"']+/dist/")


def bundle_frontend(pages: list[Path], out: Path) -> str:
    """Copy marimo's front end beside ``pages`` and point them at it instead of the CDN.

    The installed marimo package carries the front end its exports load (``marimo/_static``);
    it is copied to ``out/marimo`` (replacing an older copy) and the CDN prefix in each page
    is rewritten to that folder. Returns the marimo version.
    """
    import marimo

    static = Path(marimo.__file__).parent / "_static"
    target = out / FRONTEND_DIR
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(static, target, ignore=shutil.ignore_patterns("index.html", "CLAUDE.md"))
    for page in pages:
        text = page.read_text()
        if not CDN_FRONTEND.search(text):
            raise ScalelibError(f"{page} does not load marimo's front end from the CDN as "
                                f"marimo {marimo.__version__} should; re-export with "
                                "--runtime cdn")
        page.write_text(CDN_FRONTEND.sub(f"{FRONTEND_DIR}/", text))
    return marimo.__version__


def html_errors(page: Path) -> list[str]:
    """Messages of the cell errors recorded in an exported notebook page."""
    text = page.read_text()
    found = []
    for match in re.finditer(re.escape(ERROR_MIME), text):
        snippet = text[match.end():match.end() + 400]
        message = re.search(r'msg\\*"\s*:\s*\\*"(.*?)\\*"', snippet)
        found.append(message.group(1) if message else snippet[:120])
    return found


def export_explorer(notebook: Path, target: Path, results: Path, *,
                    runtime: str = "auto") -> Path:
    """Export the results explorer of ``results`` as a WASM app in the folder ``target``.

    The notebook is staged beside ``public/explorer-data.json`` (the sweep's runs and fits)
    and the pure-Python scalelib modules it imports, which ``marimo export html-wasm`` packs
    into a wheel; ``runtime`` decides where the page gets Pyodide (see :func:`run_export`).
    """
    from scalelib.explore import wasm
    from scalelib.explore.bundle import BUNDLE_NAME, write_bundle

    if runtime not in RUNTIMES:
        raise ScalelibError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    with tempfile.TemporaryDirectory(prefix=".explorer-stage-") as scratch:
        stage = Path(scratch)
        shutil.copyfile(notebook, stage / "explorer.py")
        write_bundle(results, stage / "public" / BUNDLE_NAME)
        wasm.stage_browser_modules(Path(__file__).resolve().parents[2], stage)
        if target.exists():
            shutil.rmtree(target)
        _marimo(marimo_command("export", "html-wasm", "explorer.py", "-o", str(target.resolve()),
                               "--mode", "run", "-f", "--no-sandbox"),
                "marimo export html-wasm of the explorer (it needs uv on PATH)", cwd=stage)
    (target / "CLAUDE.md").unlink(missing_ok=True)  # marimo's note for AI assistants, not the site
    if runtime != "cdn":
        try:
            summary = wasm.bundle_runtime(target)
            print(f"explorer: bundled Pyodide {summary['pyodide']} and "
                  f"{len(summary['packages'])} wheels ({summary['size_mb']} MB)")
        except ScalelibError as error:
            if runtime == "bundle":
                raise
            print(f"explorer: could not bundle the Python runtime ({error}); the page will "
                  "load it from the CDN when opened", file=sys.stderr)
    return target
