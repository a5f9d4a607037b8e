"""The report's tables: rows of ``numbers.json`` formatted for reading.

A :class:`Table` displays as a Markdown pipe table, which Quarto turns into a native table in
every format (HTML and Typst/PDF). Every builder takes the prepared report data ``rep``
(:func:`scalelib.report.data.load_report`) and returns the table with its Quarto label.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl

from scalelib.report.data import ReportData
from scalelib.report.formatting import fmt, join_words, published_value, span, status_word, with_ci


@dataclass(frozen=True)
class Table:
    """Rows of text shown as a Markdown pipe table (a native table in HTML and Typst)."""

    label: str
    frame: pl.DataFrame

    def markdown(self) -> str:
        """The pipe table."""
        def cell(value: object) -> str:  # no tag, code span or link can open from the data
            text = "" if value is None else str(value).replace("\n", " ")
            return re.sub(r"([\\|`<>\[\]])", r"\\\1", text)

        header = "| " + " | ".join(cell(c) for c in self.frame.columns) + " |"
        rule = "|" + "|".join(":---" for _ in self.frame.columns) + "|"
        body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.frame.iter_rows()]
        return "\n".join([header, rule, *body]) + "\n"

    def _repr_markdown_(self) -> str:
        return self.markdown()


def datasets_table(rep: ReportData) -> Table:
    """One row per regime: source, V, cells per split, split design, fingerprint."""
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
    """Model sizes with their shape and parameter count P in each regime."""
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
    """Per regime: runs, seeds, optimiser steps, cells seen, early stops."""
    rows = [{
        "Regime": r["regime"], "Runs": fmt(r["n_runs"]), "Sizes": join_words(r["sizes"]),
        "Seeds": join_words(r["seeds"]), "Steps": span(r["steps"]),
        "Budget (steps)": span(r["budget_steps"]), "Cells seen": span(r["cells_seen"]),
        "Stopped early": fmt(r["stopped_early"]),
    } for r in rep.numbers["regimes"]]
    return Table("tbl-training", pl.DataFrame(rows))


def _fits(rep: ReportData) -> Iterator[tuple[str, str, dict, dict]]:
    """(regime, method, fit, bootstrap intervals) of every fit, in report order."""
    for regime in rep.numbers["regimes"]:
        for method, fit in regime["fits"].items():
            yield regime["regime"], method, fit, fit.get("ci") or {}


def fits_table(rep: ReportData) -> Table:
    """alpha, a, c and R^2 with bootstrap intervals per regime and fit method."""
    rows = [{
        "Regime": regime, "Method": method, "Runs": fmt(fit["n_runs"]),
        "α": with_ci(fit["alpha"], ci.get("alpha")), "a": with_ci(fit["a"], ci.get("a")),
        "c": with_ci(fit["c"], ci.get("c")), "R²": fmt(fit["r2"]),
        "R² of log L": with_ci(fit["r2_log"], ci.get("r2_log")),
        "Status": status_word(fit["status"]), "Verdict": fit.get("verdict", ""),
    } for regime, method, fit, ci in _fits(rep)]
    return Table("tbl-fits", pl.DataFrame(rows))


def baselines_table(rep: ReportData) -> Table:
    """Per regime, the best transformer run (with how many runs converged) beside each
    baseline family scored on the same cells and masks, best first."""
    rows = []
    for r in rep.numbers["regimes"]:
        counts = r["convergence"]
        checked = counts["converged"] + counts["not_converged"]
        rows.append({"Regime": r["regime"], "Model": f"transformer (best of {fmt(r['n_runs'])})",
                     "Validation MSE": fmt(r["best_val_mse"]["min"]),
                     "Converged": (f"{fmt(counts['converged'])} of {fmt(checked)} runs"
                                   if checked else "not recorded")})
        rows += [{"Regime": r["regime"], "Model": b["family"] + (
                      f" ({b['setting']})" if b.get("setting") else ""),
                  "Validation MSE": fmt(b["val_mse"]), "Converged": ""} for b in r["baselines"]]
    return Table("tbl-baselines", pl.DataFrame(rows))


def entropy_table(rep: ReportData) -> Table:
    """The floor c and its entropy in bits per masked gene, with intervals; on simulated data
    with a known floor, the true floor and the true bits beside them."""
    known = {r["regime"]: r.get("known_floor") for r in rep.numbers["regimes"]}
    rows = []
    for regime, method, fit, ci in _fits(rep):
        truth = known.get(regime)
        rows.append({
            "Regime": regime, "Method": method, "c": with_ci(fit["c"], ci.get("c")),
            "Bits per masked gene": (with_ci(fit["bits"], ci.get("bits"))
                                     if fit["status"] != "no_floor" else "undefined (no floor)"),
            "True floor": _plus_minus(truth["mse"], truth["mse_se"]) if truth else "unknown",
            "True bits": _plus_minus(truth["bits"], truth["bits_se"]) if truth else "unknown",
        })
    return Table("tbl-entropy", pl.DataFrame(rows))


def _plus_minus(value: float, se: float) -> str:
    """``value ± 1.96 se`` (a 95% Monte Carlo interval)."""
    return f"{fmt(value)} ± {fmt(1.96 * se)}"


def likelihood_table(rep: ReportData) -> Table:
    """Bits per masked gene measured by each likelihood head beside the Gaussian reading of
    the MSE floor c, per regime (``tbl-heads``)."""
    gaussian = {(r["regime"], method): fit for r in rep.numbers["regimes"]
                for method, fit in r["fits"].items()}
    rows = []
    for head in rep.numbers["likelihood"]:
        for method, fit in head["fits"].items() or [("none", None)]:
            ci = (fit or {}).get("ci") or {}
            mse_fit = gaussian.get((head["regime"], method)) or {}
            rows.append({
                "Regime": head["regime"], "Head": head["objective"], "Method": method,
                "Best bits (size)": f"{fmt(head['best_bits'])} ({head['best_size']})",
                "Fitted floor c, bits": (with_ci(fit["c"], ci.get("c"))
                                         if fit and fit["status"] != "error" else "no fit"),
                "½ log₂(2πe c) of the MSE fit": (fmt(mse_fit["bits"]) if mse_fit else "n/a"),
            })
    return Table("tbl-heads", pl.DataFrame(rows))


def published_table(rep: ReportData) -> Table:
    """The published numbers (labelled) beside our grid and Huber fits of the same regimes."""
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
    for regime, method, fit, _ in _fits(rep):
        values = {"alpha": fmt(fit["alpha"]), "r2": fmt(fit["r2"]), "c": fmt(fit["c"]),
                  "bits": fmt(fit["bits"]) if fit["status"] != "no_floor" else "undefined"}
        rows.append(row("this report", regime, f"all ({fmt(fit['n_runs'])})", method, values))
    return Table("tbl-published", pl.DataFrame(rows))


def joint_table(rep: ReportData) -> Table:
    """Joint fits L(N, D) = E + A/N^alpha + B/D^beta per regime with a data-size sweep."""
    rows = []
    for entry in rep.numbers["data_size"]:
        fit = entry["joint"]
        ci = fit.get("ci") or {}
        rows.append({
            "Regime": entry["regime"], "Subsets": entry.get("subsample") or "random",
            "Runs": fmt(entry["n_runs"]),
            "D values": join_words(fmt(d) for d in entry["train_sizes"]),
            **{label: with_ci(fit[name], ci.get(name)) for label, name in (
                ("E", "E"), ("A", "A"), ("α", "alpha"), ("B", "B"), ("β", "beta"))},
            "R² of log L": fmt(fit["r2_log"]), "Status": status_word(fit["status"]),
        })
    return Table("tbl-data-size", pl.DataFrame(rows))


def saturation_table(rep: ReportData) -> Table:
    """Saturation point per model size and classifier: the smallest D whose probe score is
    within the fraction of the size's best, with its interval and the fewest seeds at any D
    (``tbl-saturation``)."""
    rows, strategies = [], len(rep.numbers["probes"].get("subsamples", [])) > 1
    for entry in rep.numbers["probes"]["saturation"]:
        rows.append({
            "Regime": entry["regime"],
            **({"Subsample": entry["subsample"] or ""} if strategies else {}),
            "Family": entry["model_family"], "Size": entry["size"] or "",
            "Probe": entry["classifier"], "D values": fmt(entry["n_sizes"]),
            "Seeds": fmt(entry.get("n_seeds")),
            "Best F1": fmt(entry["best_f1"]), "at D": fmt(entry["best_d"]),
            "Saturation D": fmt(entry["saturation_d"]),
            "95% interval": f"{fmt(entry['saturation_low'])} to {fmt(entry['saturation_high'])}",
        })
    return Table("tbl-saturation", pl.DataFrame(rows))
