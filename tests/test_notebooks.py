"""The marimo notebooks: headless runs, HTML exports, and what a browser shows of them.

One tiny sweep (smoke preset: 3 sizes x 2 regimes, 30 steps each) is trained once by running
``notebooks/scaling.py`` as a script; the data notebook, the explorer, the export command and
the browser checks reuse it. The browser checks need Debian's ``chromium`` (skipped without
it) and cut the browser off the network: the exported pages must render from local files.
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import math
import os
import shutil
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from scalelib.cli import main
from scalelib.cli.export_cmd import html_errors
from scalelib.errors import ScalelibError
from scalelib.explore import purefit, vegalite, wasm
from scalelib.explore.bundle import BUNDLE_NAME, Bundle, load_bundle, parse_bundle
from scalelib.scaling import fit_power_law

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# marimo 0.25's html-wasm export runs uv (for Ruff's import graph); it is looked up on PATH
# with this interpreter's scripts folder first, as `scalelib export` does.
UV = shutil.which("uv", path=os.pathsep.join([str(Path(sys.executable).parent),
                                              os.environ.get("PATH", "")]))
needs_uv = pytest.mark.skipif(UV is None, reason="uv is not installed (pip install uv): "
                              "marimo export html-wasm needs it, so no explorer was exported")


def run_notebook(name: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``notebooks/<name>.py`` as a script with ``-- args``; fail with its output."""
    result = subprocess.run([sys.executable, str(NOTEBOOKS / f"{name}.py"), "--", *args],
                            capture_output=True, text=True, check=False, timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory) -> Path:
    """A sweep directory trained by the scaling notebook on the smoke preset."""
    out = tmp_path_factory.mktemp("smoke-sweep")
    run_notebook("scaling", "--preset", "smoke", "--out", str(out), "--bootstrap", "50")
    return out


@pytest.fixture(scope="module")
def exported(smoke_sweep, tmp_path_factory) -> Path:
    """``scalelib export notebooks --preset smoke`` of the smoke sweep."""
    out = tmp_path_factory.mktemp("exports")
    only = ["scaling", "data", *(["explorer"] if UV else [])]
    status = main(["export", "notebooks", "--out", str(out), "--preset", "smoke",
                   "--results", str(smoke_sweep), "--only", *only])
    assert status == 0
    return out


# --------------------------------------------------------------------------------------------
# Headless notebooks


def test_scaling_notebook_trains_and_fits_headless(smoke_sweep):
    table = pl.read_parquet(smoke_sweep / "results.parquet")
    results = table.filter(pl.col("model_family") == "transformer")
    assert results.height == 6 and table.height == 6 + 2 * 4  # four baselines per regime
    assert set(results["regime"]) == {"rich", "limited"}
    assert (table["status"] == "ok").all()
    for run_id in results["run_id"]:
        assert (smoke_sweep / "runs" / run_id / "curve.parquet").exists()
    fits = json.loads((smoke_sweep / "fits.json").read_text())["fits"]
    assert {(f["group"]["regime"], f["method"]) for f in fits} == {
        (regime, method) for regime in ("rich", "limited") for method in ("grid", "huber")}
    assert all(f["n_bootstrap"] == 50 for f in fits)


def test_opening_the_scaling_notebook_never_rewrites_the_fits(smoke_sweep, tmp_path):
    """Opened on another preset's sweep without --train (as an export or a viewer would):
    the stored fits.json stays as it was, whatever the bootstrap setting."""
    sweep = tmp_path / "sweep"
    shutil.copytree(smoke_sweep, sweep)
    before = (sweep / "fits.json").read_bytes()
    result = run_notebook("scaling", "--preset", "demo", "--out", str(sweep), "--bootstrap", "0")
    assert "nothing trained" in result.stdout
    assert (sweep / "fits.json").read_bytes() == before


def test_scaling_notebook_defaults_plan_exactly_the_demos_runs(tmp_path):
    """Same run IDs as `scalelib demo` (whose limited regime has half the budget), so pressing
    Train after the demo trains nothing."""
    from scalelib.config import TRAIN_PRESETS, get_ladder
    from scalelib.demo import plan_demo
    from scalelib.explore import sweeps

    for preset in ("smoke",):  # the demo preset takes the same path, with bigger datasets
        datasets = sweeps.load_sources(sweeps.SIMULATED, preset=preset, out_dir=tmp_path / preset)
        notebook = sweeps.plan(datasets, get_ladder(preset), sweeps.train_config(preset),
                               regime_budgets=sweeps.uses_regime_budgets(sweeps.SIMULATED,
                                                                         "preset"))
        demo = plan_demo(tmp_path / preset, preset=preset)
        assert [run.run_id for run in notebook] == [run.run_id for run in demo]
        budgets = {run.dataset.regime: run.config.total_steps for run in notebook}
        assert budgets["limited"] < budgets["rich"] == TRAIN_PRESETS[preset].total_steps


def test_scaling_notebook_refuses_to_train_a_second_budget_into_a_sweep(smoke_sweep, tmp_path):
    """Fits by regime take one budget, so Train with another budget into a sweep that holds
    the preset's refuses before training (and trains nothing)."""
    sweep = tmp_path / "sweep"
    shutil.copytree(smoke_sweep, sweep)
    before = (sweep / "results.parquet").read_bytes()
    result = run_notebook("scaling", "--preset", "smoke", "--out", str(sweep), "--train",
                          "--steps", "7", "--bootstrap", "0")
    assert ("not trained: with these runs, regime=limited (and 1 other group(s)) holds runs of "
            "2 training budgets (7, 15 steps)") in result.stdout
    assert (sweep / "results.parquet").read_bytes() == before


def test_scaling_notebook_reopened_does_not_retrain(smoke_sweep):
    before = pl.read_parquet(smoke_sweep / "results.parquet")
    result = run_notebook("scaling", "--preset", "smoke", "--out", str(smoke_sweep),
                          "--bootstrap", "0")
    after = pl.read_parquet(smoke_sweep / "results.parquet")
    assert after.sort("run_id")["finished_at"].to_list() == (
        before.sort("run_id")["finished_at"].to_list())
    assert "fits of 6 runs read from" in result.stdout  # the stored fits still match
    fits = json.loads((smoke_sweep / "fits.json").read_text())["fits"]
    assert all(f["n_bootstrap"] == 50 for f in fits)


def test_scaling_notebook_trains_on_a_dataset_outside_data(smoke_sweep, tmp_path):
    result = run_notebook("scaling", "--preset", "smoke", "--bootstrap", "0", "--out",
                          str(tmp_path / "sweep"), "--source", str(smoke_sweep / "datasets" / "rich"))
    results = pl.read_parquet(tmp_path / "sweep" / "results.parquet").filter(
        pl.col("model_family") == "transformer")
    assert results.height == 3 and set(results["regime"]) == {"rich"}
    assert "3 runs in" in result.stdout


def test_data_notebook_runs_headless_and_simulates_what_is_missing(tmp_path):
    run_notebook("data", "--preset", "smoke", "--datasets", str(tmp_path))
    manifest = json.loads((tmp_path / "rich" / "manifest.json").read_text())
    assert manifest["regime"] == "rich" and manifest["n_genes"] == 32


def test_explorer_notebook_runs_headless_on_a_sweep_directory(smoke_sweep):
    result = run_notebook("explorer", "--results", str(smoke_sweep))
    assert "refitted 2 fits to 6 runs" in result.stdout


# --------------------------------------------------------------------------------------------
# The explorer's pure-Python fits and data file


def test_explorer_fits_in_p_leave_out_the_smaller_data_sizes():
    from scalelib.scaling import scaling_rows

    rows = [{"dataset": "rich", "dataset_fingerprint": "r", "n_train_cells": n, "size": size,
             "status": "ok", "best_val_mse": 1.0} for n in (1000, 18000) for size in ("D0", "D1")]
    rows.append({"dataset": "limited", "dataset_fingerprint": "l", "n_train_cells": 900,
                 "size": "D0", "status": "ok", "best_val_mse": 1.0})
    rows.append({**rows[-1], "size": "D1", "best_val_mse": None})  # no loss: not fitted
    kept = Bundle(rows=rows).scaling_rows
    assert [(row["dataset"], row["n_train_cells"]) for row in kept] == [
        ("rich", 18000), ("rich", 18000), ("limited", 900)]
    assert scaling_rows(pl.DataFrame(rows)).to_dicts() == kept  # one rule for both


@pytest.mark.parametrize("method", ["grid", "huber"])
@pytest.mark.parametrize("truth", [(2.0, 0.4, 0.2, 0.01), (1.0, 0.3, 0.5, 0.03),
                                   (1e-3, 0.01, 0.5, 0.02)])
def test_pure_fit_matches_scalelib(method, truth):
    a, alpha, c, noise = truth
    x = np.repeat([230.0, 800, 3000, 9000, 40000, 150000, 600000], 2)
    y = (a * x ** -alpha + c) * np.exp(np.random.default_rng(1).normal(0, noise, x.size))
    reference = fit_power_law(x, y, method)
    lite = purefit.fit_power_law(x.tolist(), y.tolist(), method)
    assert lite.status == reference.status
    for name in ("a", "alpha", "c", "r2", "r2_log", "bits"):
        ours, theirs = getattr(lite, name), getattr(reference, name)
        assert (math.isnan(ours) and math.isnan(theirs)) or math.isclose(
            ours, theirs, rel_tol=1e-3, abs_tol=1e-4), name


def test_pure_bootstrap_intervals_cover_the_fit():
    x = [230.0, 800, 3000, 9000, 40000, 150000, 600000] * 2
    y = [2.0 * v ** -0.4 + 0.2 + 0.002 * (i % 3) for i, v in enumerate(x)]
    fit = purefit.fit_power_law(x, y, "huber", n_bootstrap=40, seed=3)
    again = purefit.fit_power_law(x, y, "huber", n_bootstrap=40, seed=3)
    assert fit.ci == again.ci and len(fit.bootstrap_params) == 40
    low, high = fit.ci["alpha"]
    assert low <= fit.alpha <= high
    band_low, band_high = fit.band([1000.0, 10000.0])
    assert all(lo <= fit.predict(v) <= hi for v, lo, hi in zip([1e3, 1e4], band_low, band_high))


def test_pure_fit_reports_problems_like_scalelib():
    with pytest.raises(ScalelibError, match="3 distinct"):
        purefit.fit_power_law([1, 2, 2], [1, 2, 3])
    rows = [{"regime": "r", "params": p, "best_val_mse": 1.0 / p, "status": "ok"}
            for p in (1, 2)]
    (fit,) = purefit.fit_rows(rows, methods=("grid",))
    assert fit.status == "error" and fit.group == {"regime": "r"}
    rising = ([1e3, 1e4, 1e5], [1.41, 1.50, 1.59])
    for method in ("grid", "huber"):
        lite = purefit.fit_power_law(*rising, method)
        assert lite.status == fit_power_law(*map(np.asarray, rising), method).status
        assert lite.status == "increasing" and math.isnan(lite.bits)


def test_bundle_round_trip_and_scaling_spec(smoke_sweep, tmp_path):
    bundle = load_bundle(smoke_sweep)
    assert len(bundle.ok_rows) == 6 and bundle.sizes == ["T0", "T1", "T2"]
    assert not bundle.has_data_sweep
    stored = {(f.group["regime"], f.method): f for f in bundle.fits}
    refits = purefit.fit_rows(bundle.ok_rows, methods=("grid",))
    for fit in refits:  # the grid method is the same algorithm: the same numbers
        assert math.isclose(fit.alpha, stored[(fit.group["regime"], "grid")].alpha,
                            rel_tol=1e-6, abs_tol=1e-9)
    path = tmp_path / BUNDLE_NAME
    path.write_text(json.dumps({**bundle.meta, "rows": bundle.rows,
                                "fits": [f.to_dict() for f in bundle.fits]}))
    assert parse_bundle(json.loads(path.read_text())).rows == bundle.rows
    spec = json.loads(vegalite.scaling_spec(bundle.ok_rows, refits).to_json())
    marks = [layer["mark"]["type"] for layer in spec["layer"]]
    assert marks[0] == "circle" and "line" in marks and "rule" in marks
    assert len(spec["layer"][0]["data"]["values"]) == 6


def test_explorer_draws_the_scaling_chart_of_plots(smoke_sweep):
    """The explorer's spec and plots.scaling_chart come from one builder: the same layers,
    encodings and titles, and a loss axis that spans the points and baselines."""
    from scalelib.plots import scaling_chart
    from scalelib.results import read_results
    from scalelib.scaling import read_fits, scaling_rows

    bundle = load_bundle(smoke_sweep)
    huber = [fit for fit in bundle.fits if fit.method == "huber"]
    explorer = json.loads(vegalite.scaling_spec(bundle.scaling_rows, huber).to_json())
    results = scaling_rows(read_results(smoke_sweep / "results.parquet"))
    report = scaling_chart(results, read_fits(smoke_sweep / "fits.json"), method="huber").to_dict()
    assert [layer["mark"] for layer in explorer["layer"]] == [
        layer["mark"] for layer in report["layer"]]
    assert [layer["encoding"] for layer in explorer["layer"]] == [
        layer["encoding"] for layer in report["layer"]]
    assert explorer["title"] == report["title"]
    losses = [row["best_val_mse"] for row in bundle.scaling_rows]
    baselines = [row["baseline_val_mse"] for row in bundle.scaling_rows]
    low, high = explorer["layer"][0]["encoding"]["y"]["scale"]["domain"]
    assert low == pytest.approx(min(losses + baselines) / 1.25)
    assert high == pytest.approx(max(losses + baselines) * 1.25)
    band = next(layer for layer in explorer["layer"] if layer["mark"]["type"] == "area")
    assert all(low <= row["low"] <= row["high"] <= high for row in band["data"]["values"])


def test_explorer_draws_baseline_families_and_the_verdict_words():
    runs = [{"regime": "rich", "size": f"S{i}", "params": 10.0 ** (2 + i), "seed": 0,
             "best_val_mse": 2.0 * (10.0 ** (2 + i)) ** -0.3 + 0.5, "status": "ok",
             "dataset_fingerprint": "f", "n_train_cells": 100, "model_family": "transformer"}
            for i in range(5)]
    baselines = [{**runs[0], "model_family": family, "params": None, "best_val_mse": mse}
                 for family, mse in (("mean", 3.0), ("ridge", 0.9))]
    other = {**baselines[0], "n_train_cells": 50, "best_val_mse": 9.0}  # other cells: left out
    fits = purefit.fit_rows(runs, methods=("huber",))
    spec = vegalite.scaling_spec(runs, fits, baselines=[*baselines, other]).spec
    rule = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "rule")
    assert [(row["family"], row["baseline"]) for row in rule["data"]["values"]] == [
        ("mean", 3.0), ("ridge", 0.9)]
    assert spec["layer"][-1]["encoding"]["text"]["field"] == "family"
    summary = next(line for line in spec["title"]["subtitle"] if line.startswith("rich: alpha"))
    assert summary.endswith(": undetermined")  # refitted without the baselines: unchecked
    assert purefit.summary_rows(fits)[0]["verdict"] == "undetermined"
    better = [{**baselines[1], "best_val_mse": 0.4}]  # a ridge that beats every run
    checked = purefit.fit_rows(runs, methods=("huber",), baselines=better)
    assert "above_baseline" in checked[0].flags
    assert purefit.summary_rows(checked)[0]["verdict"] == "loses to a baseline"


def test_browser_modules_import_only_the_standard_library():
    code = ("import sys; import scalelib.explore.purefit, scalelib.explore.vegalite, "
            "scalelib.explore.bundle, scalelib.chartspec; heavy = {'numpy', 'polars', 'scipy', 'altair', 'torch'}; "
            "print(sorted(heavy & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "[]", result.stderr
    for relative in wasm.BROWSER_MODULES:
        assert (ROOT / relative).exists()


def test_lockfile_lists_wheels_with_emscripten_dependencies(tmp_path):
    def wheel(name, version, requires=()):
        path = tmp_path / f"{name}-{version}-py3-none-any.whl"
        lines = [f"Name: {name}", f"Version: {version}",
                 *[f"Requires-Dist: {r}" for r in requires]]
        import zipfile

        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(f"{name}/__init__.py", "")
            archive.writestr(f"{name}-{version}.dist-info/METADATA", "\n".join(lines))
        return path

    wheels = [wheel("alpha_pkg", "1.0", ["beta-pkg", "gamma; sys_platform != 'emscripten'"]),
              wheel("beta_pkg", "2.0")]
    lock = wasm.lockfile(wheels, {"arch": "wasm32"}, "3.14")
    entry = lock["packages"]["alpha-pkg"]
    assert entry["depends"] == ["beta-pkg"] and entry["imports"] == ["alpha_pkg"]
    assert entry["file_name"] == wheels[0].name and len(entry["sha256"]) == 64


# --------------------------------------------------------------------------------------------
# Exports


def test_export_writes_both_notebooks_with_their_outputs(exported):
    for name in ("scaling", "data"):
        page = exported / f"{name}.html"
        text = page.read_text()
        assert html_errors(page) == []
        assert text.count("application/vnd.vegalite") >= 3, name
        assert "cdn.jsdelivr.net" not in text and 'src="marimo/assets/' in text, name
    assert list((exported / "marimo" / "assets").glob("index-*.js"))


@needs_uv
def test_export_writes_the_wasm_explorer_with_its_data(exported):
    explorer = exported / "explorer"
    assert (explorer / "index.html").exists() and not (explorer / "CLAUDE.md").exists()
    document = json.loads((explorer / "public" / BUNDLE_NAME).read_text())
    families = [row["model_family"] for row in document["rows"]]
    assert families.count("transformer") == 6 and len(families) == 6 + 2 * 4  # and baselines
    assert len(document["fits"]) == 4
    wheels = list((explorer / "public" / "wheels").glob("scalelib-*.whl"))
    assert len(wheels) == 1
    import zipfile

    names = set(zipfile.ZipFile(wheels[0]).namelist())
    assert {"scalelib/explore/purefit.py", "scalelib/errors.py"} <= names
    assert not any("torch" in n or n.endswith("sweep.py") for n in names)


def test_export_rejects_unknown_notebook_folder(tmp_path, capsys):
    status = main(["export", "notebooks", "--out", str(tmp_path), "--notebooks",
                   str(tmp_path / "nowhere")])
    assert status == 2
    assert "--notebooks" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# A real browser, cut off from the network

RENDERED = """(() => {
  const found = {svg: 0, canvas: 0, symbols: 0, errors: 0, text: ''};
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.matches('svg.marks')) { found.svg++; found.symbols +=
          el.querySelectorAll('.mark-symbol path, .mark-line path').length; }
      if (el.matches('canvas.marks')) found.canvas++;
      if (el.matches('.marimo-error, [data-testid="marimo-traceback"]')) found.errors++;
      if (el.shadowRoot) { found.text += ' ' + el.shadowRoot.textContent; walk(el.shadowRoot); }
    }
  };
  found.text = document.body ? document.body.innerText : '';
  walk(document);
  return JSON.stringify(found);
})()"""


class Browser:
    """Headless system Chromium driven by Playwright, with every external host unresolvable;
    ``external`` lists what the pages asked of other hosts."""

    def __init__(self, playwright) -> None:
        self.browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu",
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"])
        self.context = self.browser.new_context(viewport={"width": 1280, "height": 3200})
        self.page = self.context.new_page()
        self.logs: list[str] = []
        self.external: list[str] = []
        self.context.on("console", lambda message: self.logs.append(message.text))
        self.page.on("pageerror", lambda error: self.logs.append(f"pageerror: {error}"))
        self.context.on("request", self._record)

    def _record(self, request) -> None:
        url = request.url
        if url.startswith("http") and not url.startswith("http://127.0.0.1"):
            self.external.append(url)

    def open_until(self, url: str, done, timeout: float) -> dict:
        """Load ``url`` and poll the page until ``done(state)`` or ``timeout`` seconds."""
        self.page.goto(url, wait_until="commit")
        started, state = time.time(), {}
        while time.time() - started < timeout:
            state = json.loads(self.page.evaluate(RENDERED))
            if done(state):
                break
            self.page.wait_for_timeout(1000)
        state["seconds"] = round(time.time() - started, 1)
        return state

    def screenshot(self) -> np.ndarray:
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(self.page.screenshot())).convert("L"))

    def close(self) -> None:
        self.browser.close()


@pytest.fixture
def browser_factory():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); the exported "
                    "pages were not opened in a browser")
    sync_api = pytest.importorskip("playwright.sync_api")
    playwright = sync_api.sync_playwright().start()
    opened = []

    def make() -> Browser:
        opened.append(Browser(playwright))
        return opened[-1]

    yield make
    for browser in opened:
        browser.close()
    playwright.stop()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError):
            pass


@pytest.fixture
def serve():
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("name, at_least", [("scaling", 3), ("data", 3)])
def test_exported_notebook_renders_its_charts_in_a_browser(exported, browser_factory, serve,
                                                           name, at_least):
    browser = browser_factory()
    url = f"{serve(exported)}/{name}.html"
    state = browser.open_until(url, lambda s: s["svg"] + s["canvas"] >= at_least, timeout=90)
    assert state.get("svg", 0) + state.get("canvas", 0) >= at_least, (state, browser.logs[-20:])
    assert state["errors"] == 0
    assert browser.external == [], "the page asked the internet for something"
    pixels = browser.screenshot()
    assert (pixels < 200).mean() > 0.01, "the screenshot is (nearly) blank"


@needs_uv
def test_wasm_explorer_renders_and_refits_offline(exported, browser_factory, serve):
    explorer = exported / "explorer"
    if not (explorer / "pyodide" / "pyodide-lock.json").exists():
        pytest.skip("the Pyodide runtime could not be bundled (npm or PyPI unreachable); "
                    "the explorer export loads it from the CDN, which this test cannot reach")
    browser = browser_factory()
    state = browser.open_until(f"{serve(explorer)}/index.html",
                               lambda s: s["svg"] + s["canvas"] >= 1 and "Refitted" in s["text"],
                               timeout=180)
    assert state.get("svg", 0) + state.get("canvas", 0) >= 1, (state, browser.logs[-30:])
    assert "Scaling-law explorer" in state["text"] and "6 finished runs" in state["text"]
    assert "huber" in state["text"]  # the refit readout table
    assert not [line for line in browser.logs if "Traceback" in line], browser.logs[-30:]
    assert not [url for url in browser.external if "pyodide" in url or "pypi" in url]
    pixels = browser.screenshot()
    assert (pixels < 200).mean() > 0.01, "the screenshot is (nearly) blank"
