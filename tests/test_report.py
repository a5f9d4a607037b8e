"""Tests of the report: the prepare step, the CLI, and every cell of report/index.qmd executed in
order against real results of a tiny sweep (the smoke demo plus a small data-size sweep)."""

from __future__ import annotations

import ast
import base64
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import altair as alt
import polars as pl
import pytest

from scalelib import report
from scalelib.cli import main
from scalelib.errors import ScalelibError
from scalelib.report.formatting import code, fmt, join_words, with_ci
from scalelib.results import RESULTS_SCHEMA, read_results, rows_to_frame, write_results
from scalelib.scaling import fit_groups

REPORT_DIR = Path(__file__).resolve().parents[1] / "report"
DOCUMENT = REPORT_DIR / "index.qmd"
CHUNK = re.compile(r"^```\{python\}[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
INLINE = re.compile(r"(?<!`)`\{python\}[ \t]+([^`]+)`")
REF = re.compile(r"@((?:fig|tbl|sec)-[A-Za-z0-9_-]+)")


# --------------------------------------------------------------------------------------------
# Fixtures: a smoke demo plus a data-size sweep, prepared once


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    """Smoke demo (both regimes, three sizes) plus T0 and T1 of the rich regime at D = 200, 600,
    all probed (cell_type)."""
    import torch

    from scalelib.config import TRAIN_PRESETS, get_ladder
    from scalelib.data.store import load_dataset
    from scalelib.demo import run_demo
    from scalelib.probes import run_probes
    from scalelib.sweep import plan_runs, run_sweep

    out = tmp_path_factory.mktemp("results")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # models this small train ~3x faster on one thread
    try:
        run_demo(out, preset="smoke", n_bootstrap=20, progress=False)
        dataset = load_dataset(out / "datasets" / "rich")
        runs = plan_runs(dataset, get_ladder("smoke")[:2], TRAIN_PRESETS["smoke"],
                         train_sizes=[200, 600])
        run_sweep(runs, out, progress=False)
        run_probes(out)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def prepared(results_dir, tmp_path_factory) -> report.PreparedReport:
    return report.prepare_report(results_dir, tmp_path_factory.mktemp("report") / "_data",
                                 n_bootstrap=50)  # the joint fit's bootstrap (power laws: fits.json)


@pytest.fixture(scope="module")
def plain_dir(results_dir, tmp_path_factory) -> Path:
    """The demo's results and fits without the data-size runs (no joint fit: faster)."""
    plain = tmp_path_factory.mktemp("plain")
    table = read_results(results_dir / "results.parquet")
    write_results(table.filter(pl.col("n_train_cells").is_in([1350, 270])),
                  plain / "results.parquet")
    shutil.copy(results_dir / "fits.json", plain)
    return plain


# --------------------------------------------------------------------------------------------
# A minimal Quarto stand-in: run the document's cells in order in one namespace


def cell_options(source: str) -> dict[str, str]:
    """``#| key: value`` lines of a cell."""
    options = {}
    for line in source.splitlines():
        if line.startswith("#| "):
            key, _, value = line[3:].partition(":")
            options[key.strip()] = value.strip().strip('"')
    return options


def run_document(path: Path) -> tuple[list[dict], list[tuple[str, object]], dict]:
    """Execute every ```{python} chunk in order; evaluate inline expressions where they stand.

    Returns the cells (options, value of the last expression, objects passed to ``display``
    or printed, in order, with consecutive printed text joined into one :class:`Markdown`),
    the inline expressions with their values, and the namespace. As in a Jupyter kernel,
    ``display`` is a builtin; what a cell prints is its Markdown output (``output: asis``).
    """
    text = path.read_text()
    displayed: list = []

    def show(part: object) -> None:
        if isinstance(part, str) and displayed and isinstance(displayed[-1], str):
            displayed[-1] = report.Markdown(displayed[-1] + part)
        else:
            displayed.append(report.Markdown(part) if isinstance(part, str) else part)

    def printed(*values: object, sep: str = " ", end: str = "\n") -> None:
        show(sep.join(str(v) for v in values) + end)

    namespace: dict = {"__name__": "__report__", "display": show, "print": printed}
    cells, inline, position = [], [], 0

    def evaluate_inline(markdown: str) -> None:
        for expression in INLINE.findall(markdown):
            inline.append((expression, eval(expression, namespace)))

    for match in CHUNK.finditer(text):
        evaluate_inline(text[position:match.start()])
        position = match.end()
        source = match.group(1)
        tree = ast.parse(source)
        last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        body = tree.body[:-1] if last else tree.body
        code = compile(ast.Module(body, type_ignores=[]), str(path), "exec")
        exec(code, namespace)  # noqa: S102 - running the report's own cells is the test
        value = (eval(compile(ast.Expression(last.value), str(path), "eval"), namespace)
                 if last else None)
        cells.append({"options": cell_options(source), "value": value,
                      "displayed": list(displayed)})
        displayed.clear()
    evaluate_inline(text[position:])
    return cells, inline, namespace


def run_report(data_dir: Path) -> tuple[list[dict], list[tuple[str, object]], dict]:
    """The document run as Quarto would: in its folder, with ``data_dir`` in the env."""
    saved_env, saved_cwd = os.environ.get(report.DATA_ENV), Path.cwd()
    os.environ[report.DATA_ENV] = str(data_dir)
    os.chdir(REPORT_DIR)
    try:
        return run_document(DOCUMENT)
    finally:
        os.chdir(saved_cwd)
        if saved_env is None:
            os.environ.pop(report.DATA_ENV, None)
        else:
            os.environ[report.DATA_ENV] = saved_env


def report_text(data_dir: Path) -> str:
    """Everything the document's cells write as Markdown, in order (the raw HTML head left out)."""
    cells, _, _ = run_report(data_dir)
    return "\n".join(str(part) for cell in cells for part in [cell["value"], *cell["displayed"]]
                     if isinstance(part, str) and not part.startswith("```{=html}"))


@pytest.fixture(scope="module")
def executed(prepared):
    """The document run against the smoke demo's prepared results."""
    return run_report(prepared.out_dir)


# --------------------------------------------------------------------------------------------
# The document


def test_every_figure_cell_gives_a_chart_and_images(executed):
    cells, _, _ = executed
    figures = [c for c in cells if c["options"].get("label", "").startswith("fig-")]
    assert {c["options"]["label"] for c in figures} == {"fig-scaling", "fig-test-val"}
    for cell in figures:
        figure = cell["value"]
        assert isinstance(figure, report.Figure), cell["options"]["label"]
        assert figure.label == cell["options"]["label"]
        assert cell["options"].get("fig-cap")
        assert isinstance(figure.chart, alt.TopLevelMixin)
        figure.chart.to_dict()  # a valid Vega-Lite spec
        assert {path.suffix for path in figure.files} == {".png", ".svg"}
        assert all(path.stat().st_size > 1000 for path in figure.files)
        bundle = figure._repr_mimebundle_()
        assert "vegaEmbed(" in bundle["text/html"]
        assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG")


def test_every_table_cell_gives_rows(executed):
    cells, _, _ = executed
    tables = [c for c in cells if c["options"].get("label", "").startswith("tbl-")]
    assert {c["options"]["label"] for c in tables} == {
        "tbl-datasets", "tbl-ladder", "tbl-training", "tbl-fits", "tbl-baselines",
        "tbl-entropy", "tbl-published"}
    for cell in tables:
        table = cell["value"]
        assert isinstance(table, report.Table), cell["options"]["label"]
        assert isinstance(table.frame, pl.DataFrame) and table.frame.height > 0
        assert cell["options"].get("tbl-cap")
        lines = table._repr_markdown_().splitlines()
        assert len(lines) == table.frame.height + 2 and lines[1].startswith("|:---")


def test_fits_table_has_both_methods_per_regime(executed):
    cells, _, _ = executed
    frame = next(c["value"] for c in cells if c["options"].get("label") == "tbl-fits").frame
    assert set(zip(frame["Regime"], frame["Method"])) == {
        (r, m) for r in ("rich", "limited") for m in ("grid", "huber")}
    assert {"α", "a", "c", "R²", "R² of log L", "Verdict"} <= set(frame.columns)


def test_each_fit_states_its_verdict_in_words_next_to_its_numbers(executed, prepared):
    cells, _, _ = executed
    text = "\n".join(str(part) for c in cells for part in [c["value"], *c["displayed"]])
    numbers = json.loads((prepared.out_dir / "numbers.json").read_text())
    for regime in numbers["regimes"]:
        for fit in regime["fits"].values():
            assert f"verdict **{fit['verdict']}**" in text
            assert report.escape(fit["summary"]) in text
    assert "runs converged (a fixed-budget run" in text or "is not recorded" in text


def test_numbers_give_baselines_convergence_and_verdicts_per_regime():
    rows = [{**_row(size, seed), "converged": True} for size in range(5) for seed in (0, 1)]
    runs = rows_to_frame(rows).with_columns(pl.lit("transformer").alias("model_family"))
    baselines = pl.concat([runs.head(1), runs.head(1)]).with_columns(
        pl.Series("model_family", ["mean", "ridge"]), pl.Series("best_val_mse", [3.0, 0.9]),
        pl.Series("test_mse", [3.1, 0.91]), pl.lit(None, pl.Int64).alias("params"))
    table = pl.concat([runs, baselines])
    fits = fit_groups(table, by=["regime"], methods=["huber"])
    regime = report.compute_numbers(table, fits, [], {})["regimes"][0]
    assert regime["convergence"] == {"converged": 10, "not_converged": 0, "unknown": 0}
    assert [(b["family"], b["val_mse"]) for b in regime["baselines"]] == [
        ("ridge", 0.9), ("mean", 3.0)]
    fit = regime["fits"]["huber"]
    assert fit["verdict"] == "data ran out" and "ridge reaches 0.9" in fit["summary"]


def test_asis_cells_give_markdown(executed):
    cells, _, _ = executed
    asis = [c for c in cells if c["options"].get("output") == "asis"]
    assert len(asis) >= 10
    for cell in asis:
        parts = [cell["value"]] if cell["value"] is not None else cell["displayed"]
        assert parts and all(isinstance(p, (report.Markdown, report.Figure)) for p in parts)
        assert all(str(p).strip() for p in parts if isinstance(p, report.Markdown))
    head = asis[0]["value"]
    assert head.startswith("```{=html}") and "vegaEmbed" in head


def test_data_size_section_has_its_figure_and_table(executed):
    cells, _, namespace = executed
    parts = next(c["displayed"] for c in cells
                 if any(isinstance(p, report.Figure) for p in c["displayed"]))
    opening, figure, closing = parts
    assert opening.rstrip().endswith("::: {#fig-data-size}")
    assert figure.label == "fig-data-size" and figure.png.is_file()
    assert "vegaEmbed(" in figure._repr_mimebundle_()["text/html"]
    assert "\n:::\n" in closing and closing.rstrip().endswith("{#tbl-data-size}")
    table = report.joint_table(namespace["rep"])
    assert table.frame["Regime"].to_list() == ["rich"] and table.markdown() in closing
    assert "[" in table.frame["α"][0]  # with its bootstrap interval


def test_probe_section_has_its_figure_and_saturation_table(executed, prepared):
    cells, _, namespace = executed
    probes = prepared.numbers["probes"]
    assert probes["label"] == "cell_type" and "random split" in probes["splits"][0]
    parts = next(c["displayed"] for c in cells if any(
        isinstance(p, report.Figure) and p.label == "fig-probes" for p in c["displayed"]))
    assert parts[1].png.is_file() and (prepared.out_dir / "probes.parquet").is_file()
    saturated = {(e["model_family"], e["size"]) for e in probes["saturation"]}
    assert saturated >= {("transformer", "T0"), ("transformer", "T1"), ("pca", None)}
    assert "{#tbl-saturation}" in parts[-1]
    assert report.saturation_table(namespace["rep"]).markdown() in parts[-1]


def test_every_inline_expression_evaluates(executed):
    _, inline, _ = executed
    assert len(inline) > 30
    for expression, value in inline:
        assert isinstance(value, report.Markdown), expression
        assert value.strip() and value != "n/a", expression
    values = dict(inline)
    assert values['q["n_runs"]'] == "10" and values['q["regimes"]'] == "rich and limited"
    assert values['q["pub_rich_floor_bits"]'] == "2.30"


def test_inline_expressions_stay_on_one_line():
    text = DOCUMENT.read_text()
    assert len(re.findall(r"(?<!`)`\{python\}", text)) == len(INLINE.findall(text))


def test_prose_types_no_numbers():
    """Every number in the document's prose comes from an inline expression or a cell."""
    text = DOCUMENT.read_text().split("---", 2)[2]
    prose = INLINE.sub("", CHUNK.sub("", text))
    formula = "½ log~2~(2πe c)"  # the entropy of a Gaussian, as a formula
    prose = re.sub(r"\{#[^}]*\}|@(?:fig|tbl|sec)-[\w-]+|log1p", "", prose.replace(formula, ""))
    assert re.findall(r"[^\n]*[0-9][^\n]*", prose) == []


def test_cross_references_resolve(executed):
    cells, _, _ = executed
    text = DOCUMENT.read_text()
    generated = "\n".join(str(part) for c in cells for part in [c["value"], *c["displayed"]]
                          if isinstance(part, str))
    defined = set(re.findall(r"\{#((?:fig|tbl|sec)-[\w-]+)", text + generated))
    defined |= {c["options"]["label"] for c in cells if "label" in c["options"]}
    referenced = set(REF.findall(INLINE.sub("", CHUNK.sub("", text)) + generated))
    assert referenced and referenced <= defined


def test_quarto_project_files():
    config = (REPORT_DIR / "_quarto.yml").read_text()
    for needed in ("embed-resources: true", "typst:", "freeze: auto", "- index.qmd"):
        assert needed in config
    assert "jupyter: python3" in DOCUMENT.read_text()
    assert "#| tags: [parameters]" in DOCUMENT.read_text()


# --------------------------------------------------------------------------------------------
# The prepare step


def test_prepare_writes_what_the_report_reads(prepared, results_dir):
    out = prepared.out_dir
    for name in ("results.parquet", "fits.json", "numbers.json"):
        assert (out / name).is_file()
    numbers = json.loads((out / "numbers.json").read_text(),
                         parse_constant=lambda name: pytest.fail(f"{name} in numbers.json"))
    assert prepared.fits_source == "fits.json of the results directory"
    assert [r["regime"] for r in numbers["regimes"]] == ["rich", "limited"]
    assert numbers["runs"] == {"total": 10, "ok": 10, "failed": [], "scaling": 6,
                               "data_size": 7}
    rich = numbers["regimes"][0]
    assert rich["n_runs"] == 3 and rich["sizes"] == ["T0", "T1", "T2"]
    assert set(rich["fits"]) == {"grid", "huber"} and rich["dataset"]["found"]
    assert rich["dataset"]["provenance"]["source"] == "simulator"
    assert [d["train_sizes"] for d in numbers["data_size"]] == [[200, 600, 1350]]
    assert len(list((out / "manifests").glob("*.json"))) == 2
    copied = read_results(out / "results.parquet")["model_family"].value_counts()
    assert dict(copied.iter_rows()) == {"transformer": 10, "mean": 4, "pca": 4, "ridge": 4,
                                        "knn": 4}  # baselines at each (dataset, D)
    assert numbers["published"]["citation"] == report.published.CITATION


def test_prepare_computes_fits_when_fits_json_is_absent_or_stale(plain_dir, tmp_path):
    bare = tmp_path / "sweep"
    bare.mkdir()
    shutil.copy(plain_dir / "results.parquet", bare)
    prepared = report.prepare_report(bare, tmp_path / "a", n_bootstrap=10)
    assert prepared.fits_source.startswith("computed") and "no fits.json" in prepared.fits_source
    fits = json.loads((tmp_path / "a" / "fits.json").read_text())["fits"]
    assert {(f["group"]["regime"], f["method"]) for f in fits} == {
        (r, m) for r in ("rich", "limited") for m in ("grid", "huber")}
    assert {f["n_bootstrap"] for f in fits} == {10} and {f["n_runs"] for f in fits} == {3}
    assert prepared.numbers["regimes"][0]["dataset"]["found"]  # manifests via the rows' paths

    stored = json.loads((plain_dir / "fits.json").read_text())
    stored["fits"] = [f for f in stored["fits"] if f["method"] == "huber"]
    (bare / "fits.json").write_text(json.dumps(stored))
    prepared = report.prepare_report(bare, tmp_path / "b", n_bootstrap=3)
    assert "does not match" in prepared.fits_source and "grid fit" in prepared.fits_source


def test_report_without_data_size_sweep_says_so(plain_dir, tmp_path):
    prepared = report.prepare_report(plain_dir, tmp_path / "_data")
    assert prepared.fits_source == "fits.json of the results directory"
    rep = report.load_report(prepared.out_dir)
    assert report.data_size_figure(rep) is None
    text = report_text(prepared.out_dir)
    assert "no data-size sweep" in text and "#fig-data-size" not in text


def test_prepare_refuses_a_directory_without_results(tmp_path):
    with pytest.raises(ScalelibError, match="has no results.parquet") as error:
        report.prepare_report(tmp_path, tmp_path / "out")
    assert "\n" not in str(error.value)


def test_load_report_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv(report.DATA_ENV, raising=False)
    with pytest.raises(ScalelibError, match="scalelib report --results"):
        report.load_report(tmp_path)


def test_report_modules_import_no_torch():
    code = ("import sys, scalelib.report, scalelib.scaling, scalelib.plots; "
            "bad = [m for m in ('torch', 'scanpy', 'anndata') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# The command


def test_cli_without_results_is_one_clear_line(tmp_path, capsys):
    assert main(["report", "--results", str(tmp_path), "--project", str(REPORT_DIR),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scalelib report: error:") and "results.parquet" in err
    assert "\n" not in err


def test_cli_without_quarto_says_how_to_install(plain_dir, tmp_path, monkeypatch, capsys):
    """Whatever an earlier `make report` installed: jupyter is made to look absent here."""
    from scalelib.report import render

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(render, "missing_jupyter", lambda: ["jupyter_client"])
    out = tmp_path / "_data"
    assert main(["report", "--results", str(plain_dir), "--out", str(out),
                 "--project", str(REPORT_DIR)]) == 0
    printed = capsys.readouterr().out
    assert "https://quarto.org/docs/get-started/" in printed and str(out) in printed
    assert "pip install jupyter" in printed and (out / "numbers.json").is_file()


def test_cli_no_render_prints_the_command(plain_dir, tmp_path, capsys):
    out = tmp_path / "_data"
    assert main(["report", "--results", str(plain_dir), "--out", str(out),
                 "--project", str(REPORT_DIR), "--no-render"]) == 0
    printed = capsys.readouterr().out
    assert f"quarto render {REPORT_DIR / 'index.qmd'}" in printed


def _fake_quarto(directory: Path) -> Path:
    script = directory / "quarto"
    script.write_text("#!/bin/sh\n"
                      f'echo "$@" > "{directory}/args"\n'
                      f'echo "$SCALELIB_REPORT_DATA" > "{directory}/data"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_render_calls_quarto_on_the_document(prepared, tmp_path, monkeypatch):
    quarto = _fake_quarto(tmp_path)
    monkeypatch.setattr(report.render, "missing_jupyter", list)
    report.render_report(REPORT_DIR, prepared.out_dir, quarto=str(quarto))
    assert (tmp_path / "args").read_text().split() == ["render", str(DOCUMENT)]
    assert (tmp_path / "data").read_text().strip() == str(prepared.out_dir.resolve())


def test_render_without_jupyter_names_the_fix(prepared, tmp_path, monkeypatch):
    monkeypatch.setattr(report.render, "missing_jupyter", lambda: ["ipykernel"])
    with pytest.raises(ScalelibError, match="pip install jupyter"):
        report.render_report(REPORT_DIR, prepared.out_dir, quarto=str(_fake_quarto(tmp_path)))


@pytest.mark.skipif(shutil.which("quarto") is None or report.render.missing_jupyter() != [],
                    reason="quarto (and jupyter in this environment) not installed")
def test_quarto_renders_html_and_pdf(prepared, tmp_path):
    project = tmp_path / "report"
    shutil.copytree(REPORT_DIR, project, ignore=shutil.ignore_patterns(
        "_data", "_freeze", ".quarto", "index_files", "index.html", "index.pdf"))
    report.render_report(project, prepared.out_dir)
    html = (project / "index.html").read_text()
    assert "vegaEmbed(" in html and 'id="fig-scaling"' in html
    assert (project / "index.pdf").stat().st_size > 10_000


# --------------------------------------------------------------------------------------------
# Formatting


def test_numbers_are_formatted_for_prose():
    assert fmt(1350) == "1,350" and fmt(0.0658123) == "0.0658" and fmt(None) == "n/a"
    assert fmt(float("nan")) == "n/a" and fmt(5.51e-10) == "5.51×10^−10^"
    assert fmt(12345.6) == "12,346" and fmt(2.0e7) == "2×10^7^"
    assert fmt(999.7) == "1,000" and fmt(9.9996e6) == "1×10^7^"  # rounding changes the form
    assert with_ci(0.5, [0.4, 0.6]) == "0.5 [0.4, 0.6]" and with_ci(0.5, [None, 0.6]) == "0.5"
    assert join_words(["a", "b", "c"]) == "a, b and c" and join_words([]) == "none"


# --------------------------------------------------------------------------------------------
# A results table unlike the demo's: one custom regime, two seeds, a failed run, no manifest


def _row(size: int, seed: int, status: str = "ok") -> dict:
    params = 10 ** (2 + size)
    val = 2.0 * params ** -0.3 + 0.5 if status == "ok" else None
    row = dict.fromkeys(RESULTS_SCHEMA)
    row.update(
        run_id=f"r{size}{seed}{status[:2]}", regime="custom", source="h5ad", dataset="gone",
        dataset_fingerprint="f00d", n_genes=100, n_train_cells=1000, n_val_cells=50,
        n_test_cells=50, size=f"S{size}", d_model=4 * 2 ** size, n_layers=1 + size, n_heads=1,
        ff_mult=4, params=params, seed=seed, batch_size=32, lr=1e-3, schedule="cosine",
        mask_rate=0.15, budget_steps=100, steps=100, cells_seen=3200, stopped_early=False,
        wall_time_s=1.0, device="cpu", dtype="fp32", torch_version="t", code_version="c",
        finished_at="2026-01-01T00:00:00+00:00", status=status, best_val_mse=val,
        test_mse=None if val is None else val * (1.01 + 0.01 * seed), baseline_val_mse=3.0,
    )
    return row


def test_report_of_a_custom_regime_with_a_failed_run(tmp_path):
    rows = [_row(size, seed) for size in range(4) for seed in (0, 1)]
    rows.append(_row(3, 2, status="failed: RuntimeError: out of memory"))
    (tmp_path / "sweep").mkdir()
    write_results(rows_to_frame(rows), tmp_path / "sweep" / "results.parquet")
    prepared = report.prepare_report(tmp_path / "sweep", tmp_path / "_data", n_bootstrap=10)
    rep = report.load_report(prepared.out_dir)
    assert rep.regimes == ["custom"] and rep.numbers["runs"]["failed"][0]["size"] == "S3"
    numbers = rep.numbers
    text = report_text(prepared.out_dir)
    assert "was not found" in text and "out of memory" in text and "no rich regime" in text
    assert "**custom** (V = 100 genes" in text and "- **Budget**: custom: 100 optimiser steps" in text
    for table in (report.datasets_table, report.ladder_table, report.training_table,
                  report.fits_table, report.baselines_table, report.entropy_table,
                  report.published_table):
        assert table(rep).frame.height > 0
    assert report.scaling_figure(rep).png.is_file()
    fit = numbers["regimes"][0]["fits"]["huber"]
    assert fit["n_runs"] == 8 and fit["alpha"] == pytest.approx(0.3, abs=0.05)
    assert all(value.strip() for value in report.quotes(numbers).values())


def test_census_manifest_gives_version_and_filter(tmp_path):
    dataset = tmp_path / "lung"
    dataset.mkdir()
    obs_filter = "is_primary_data == True and tissue_general == 'lung'"
    (dataset / "manifest.json").write_text(json.dumps({
        "fingerprint": "f00d", "source": "census", "census_version": "2025-01-30",
        "obs_filter": obs_filter, "seed": 0, "n_genes": 100,
        "provenance": {"source": "census", "census_version": "2025-01-30",
                       "census_summary": {"total_cell_count": 1}, "organism": "homo_sapiens",
                       "drawn_joinids_sha256": "ab"},
        "split": {"method": "holdout", "holdout": "donor_id"},
        "hvg_candidates": {"gene_name": ["A"]},
    }))
    rows = [{**_row(size, 0), "source": "census", "dataset": str(dataset)} for size in range(4)]
    (tmp_path / "sweep").mkdir()
    write_results(rows_to_frame(rows), tmp_path / "sweep" / "results.parquet")
    prepared = report.prepare_report(tmp_path / "sweep", tmp_path / "_data", n_bootstrap=0)
    manifest = json.loads((tmp_path / "_data" / "manifests" / "dataset-0.json").read_text())
    assert "hvg_candidates" not in manifest and manifest["census_version"] == "2025-01-30"
    text = report_text(prepared.out_dir)
    assert "cells from the CELLxGENE Census (Census version 2025-01-30; obs filter " in text
    assert f"`{obs_filter}`" in text and "organism `homo_sapiens`" in text
    assert "summary" not in text and "sha256" not in text
    assert "whole donor\\_id groups held out" in text  # escaped Markdown: donor_id as shown
    rep = report.load_report(prepared.out_dir)
    assert report.datasets_table(rep).frame["Census version"].to_list() == ["2025-01-30"]


# --------------------------------------------------------------------------------------------
# Outputs that never clobber inputs; nothing from the data becomes a path or live markup


def test_report_out_refuses_another_results_directory(plain_dir, tmp_path, capsys):
    other = tmp_path / "other"
    (other / "runs").mkdir(parents=True)
    (other / "results.parquet").write_bytes(b"keep me")
    assert main(["report", "--results", str(plain_dir), "--out", str(other), "--no-render",
                 "--project", str(REPORT_DIR)]) == 2
    assert "another results directory" in capsys.readouterr().err
    assert (other / "results.parquet").read_bytes() == b"keep me"
    assert main(["report", "--results", str(plain_dir), "--out", str(plain_dir)]) == 2
    (tmp_path / "file").write_text("x")
    assert main(["report", "--results", str(plain_dir), "--out", str(tmp_path / "file")]) == 2


def test_report_out_keeps_the_users_own_files(plain_dir, tmp_path):
    out = tmp_path / "_data"
    report.prepare_report(plain_dir, out, n_bootstrap=0)
    mine = [out / "figures" / "my-sketch.png", out / "manifests" / "notes.json", out / "notes.md"]
    for path in mine:
        path.parent.mkdir(exist_ok=True)
        path.write_text("mine")
    (out / "figures" / "fig-scaling.png").write_text("stale")
    report.prepare_report(plain_dir, out, n_bootstrap=0)  # a prepared folder may be refreshed
    assert all(path.read_text() == "mine" for path in mine)
    assert not (out / "figures" / "fig-scaling.png").exists()


def test_a_crafted_fingerprint_never_becomes_a_path(tmp_path):
    dataset = tmp_path / "data"
    dataset.mkdir()
    crafted = "../../escaped/x"
    (dataset / "manifest.json").write_text(json.dumps({"fingerprint": crafted, "seed": 0}))
    rows = [{**_row(size, 0), "dataset": str(dataset), "dataset_fingerprint": crafted}
            for size in range(4)]
    (tmp_path / "sweep").mkdir()
    write_results(rows_to_frame(rows), tmp_path / "sweep" / "results.parquet")
    out = tmp_path / "deep" / "er" / "_data"
    report.prepare_report(tmp_path / "sweep", out, n_bootstrap=0)
    written = {path.relative_to(tmp_path) for path in tmp_path.rglob("*") if path.is_file()}
    assert not any("escaped" in str(path) for path in written)
    assert report.load_report(out).manifests[crafted]["fingerprint"] == crafted


HOSTILE = "run`<img src=x onerror=alert(1)>`[x](javascript:y)"


def test_hostile_names_stay_text_in_the_reports_markdown(tmp_path):
    dataset = tmp_path / HOSTILE
    dataset.mkdir()
    (dataset / "manifest.json").write_text(json.dumps({
        "fingerprint": "f00d", "seed": 0, "source": HOSTILE, "hvg_flavor": HOSTILE,
        "provenance": {"uri": HOSTILE, "note": HOSTILE},
        "split": {"method": "stratified", "stratify": HOSTILE}}))
    rows = [{**_row(size, 0), "dataset": str(dataset), "source": HOSTILE, "regime": HOSTILE,
             "device": HOSTILE} for size in range(4)]
    sweep = tmp_path / f"sweep{HOSTILE}"
    sweep.mkdir()
    write_results(rows_to_frame(rows), sweep / "results.parquet")
    prepared = report.prepare_report(sweep, tmp_path / "_data", n_bootstrap=0)
    rep = report.load_report(prepared.out_dir)
    texts = [report_text(prepared.out_dir), *report.quotes(prepared.numbers).values()]
    texts += [table(rep).markdown() for table in (report.datasets_table, report.training_table,
                                                   report.fits_table)]
    for text in texts:
        assert not re.search(r"(?<![\\`])<img", _outside_code_spans(text)), text


def _outside_code_spans(markdown: str) -> str:
    """The Markdown with every code span (any fence length) removed."""
    return re.sub(r"(`+)(?:(?!\1).)*?\1", "", markdown)


def test_code_spans_hold_any_text():
    for text in ("plain", "a`b", "``", "`start", "end`", "<b>x</b>"):
        span = code(text)
        fence = re.match(r"`+", span).group()
        assert span.endswith(fence) and fence not in span[len(fence):-len(fence)]
        assert span[len(fence):-len(fence)].strip(" ") == text


def test_heads_and_per_gene_sections_show_their_data(tmp_path, capsys):
    """An MSE and a Gaussian ladder with a per-gene table: the per-gene command summarises every
    best run, the fits in P use the MSE runs, and the report draws the heads table and the
    per-gene figure."""
    from scalelib.cli import main
    from scalelib.config import SMOKE_LADDER, TRAIN_PRESETS, Regime
    from scalelib.data.preprocess import simulate_dataset
    from scalelib.sweep import plan_runs, run_sweep

    dataset = simulate_dataset(Regime("rich", n_genes=24, n_cells=600), seed=1)
    config = TRAIN_PRESETS["smoke"].with_(max_steps=12, eval_every=4)
    sweep = tmp_path / "sweep"
    for objective in ("mse", "gaussian"):
        run_sweep(plan_runs(dataset, SMOKE_LADDER, config.with_(objective=objective)), sweep,
                  progress=False)
    assert main(["pergene", "--sweep", str(sweep), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sorted(row["objective"] for row in summary) == ["gaussian"] * 3 + ["mse"] * 3
    genes = pl.read_parquet(sweep / "pergene.parquet")
    for row in summary:  # the genes carrying most bits: largest summed NLL first
        if row["objective"] == "mse":
            assert row["top_bits_genes"] is None
        else:
            run = genes.filter(pl.col("run_id") == row["run_id"])
            assert row["top_bits_genes"].startswith(run.sort("nll_nats_sum")["gene"][-1] + " ")
    for _, run in genes.group_by("run_id"):
        assert run["error_share"].sum() == pytest.approx(1.0)
        assert (run["squared_error_sum"].sum() / run["n_masked"].sum()
                == pytest.approx(run["best_val_mse"][0], rel=1e-9))
    prepared = report.prepare_report(sweep, tmp_path / "_data", n_bootstrap=0)
    assert prepared.numbers["regimes"][0]["n_runs"] == len(SMOKE_LADDER)  # MSE runs only
    (head,) = prepared.numbers["likelihood"]
    assert head["objective"] == "gaussian" and len(head["bits"]) == len(SMOKE_LADDER)
    text = report_text(prepared.out_dir)
    assert "gaussian head" in text and "{#tbl-heads}" in text
    cells, _, _ = run_report(prepared.out_dir)
    figures = [part for cell in cells for part in cell["displayed"]
               if isinstance(part, report.Figure)]
    assert [figure.label for figure in figures] == ["fig-pergene"]
    assert figures[0].png.is_file()
