"""Outputs of a power analysis: tidy CSV, JSON summary, figures and a one-page HTML report.

:func:`write_power_report` writes, into one folder::

    power_table.csv       one row per (rules, grid point, rig seed (repeat), split) of the selection grids
    power_summary.json    grid, accuracy and interval per point, every answer (confirmed, held out, pairs,
                          M animals) with its sentence and assumptions, chance, skipped values, provenance
    power_heatmap.png     selection accuracy over units x noise, one panel per session count, cells reaching
                          the target outlined, the recommended cell boxed with its confirmed accuracy
    power_units.png       selection accuracy vs units with intervals, and the confirmed accuracy
    power_sessions.png    selection accuracy vs sessions at the recommended number of units, and the confirmed
    power_confusion.png   the confirmation networks' confusion at the recommended (or best) point
    power_animals.png     P(the verdict over M animals is right) against M, with intervals
    power_pairs.png       per pair of rules: its protocol and confirmed accuracy (3 or more rules)
    power_holdout.png     per held-out level: accuracy held out and simulated (with --holdout)
    power_report.html     one page: the answers, the figures, the tables
    power_report.md       the same answers and tables as Markdown

The figures and their captions are drawn by :mod:`virtual_lab.analysis.power_figures` (its ``plot_*``
functions and captions are importable from here too).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from virtual_lab.analysis.power import PowerResult, short_rule
from virtual_lab.analysis.power_figures import (
    _confirmed, _n_selection, _noise_short, figure_captions, heatmap_caption, plot_animals, plot_confusion_at,
    plot_heatmap, plot_holdout, plot_pairs, plot_sessions, plot_units,
)

__all__ = ["write_power_report", "plot_heatmap", "plot_units", "plot_sessions", "plot_confusion_at", "plot_animals",
           "plot_pairs", "plot_holdout", "heatmap_caption", "figure_captions", "power_html", "power_markdown"]


def _fmt_interval(interval) -> str:
    low, high = interval
    return f"[{'-' if low is None else low}, {'> max tested' if high is None else high}]"


def _answer_tables(result: PowerResult) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every answer table: recommended per noise, held out, pairs, M animals."""
    def iv(values) -> str:
        low, high = values
        return "-" if low is None or high is None else f"[{low:.2f}, {high:.2f}]"

    tables = []
    confirmed = _confirmed(result)
    rec = result.recommendation
    if confirmed:
        selected = rec["selected"]
        tables.append(("Recommended protocol: chosen and confirmed", ["", "networks", "accuracy", "interval"], [
            ["chosen on (cross-validated)", str(selected["n"]), f"{selected['accuracy']:.2f}", iv(selected["ci"])],
            ["confirmed on (Wilson)", str(confirmed["n"]), f"{confirmed['accuracy']:.2f}", iv(confirmed["wilson"])]]))
    holdout = result.holdout
    if holdout is not None:
        rows = [[row["level"], row["position"], str(row["n_train_networks"]), str(row["n_test_networks"]),
                 "-" if row["accuracy"] is None else f"{row['accuracy']:.2f}", iv(row["wilson"]),
                 "-" if row["in_distribution"]["accuracy"] is None else f"{row['in_distribution']['accuracy']:.2f}"]
                for row in holdout["levels"]]
        pooled = holdout["pooled"]
        rows.append(["pooled", "", "", str(pooled["n"]),
                     "-" if pooled["accuracy"] is None else f"{pooled['accuracy']:.2f}", iv(pooled["wilson"]),
                     f"{holdout['in_distribution']['accuracy']:.2f}" if holdout["in_distribution"]["accuracy"]
                     is not None else "-"])
        tables.append((f"Held-out condition: {holdout['axis']}", ["level", "position", "training networks",
                                                                  "test networks", "held out", "interval",
                                                                  "simulated"], rows))
    if result.pairs:
        tables.append(("Pairs of rules (decoder trained on the two rules only)",
                       ["pair", "units", "sessions", _noise_short(result), "selected", "confirmed", "interval", "n",
                        "category"],
                       [[p["label"], str(p["units"]), str(p["sessions"]), f"{p['noise']:g}",
                         f"{p['selected']['accuracy']:.2f}",
                         "-" if p["confirmed"]["accuracy"] is None else f"{p['confirmed']['accuracy']:.2f}",
                         iv(p["confirmed"]["wilson"]), str(p["confirmed"]["n"]), p["category"]] for p in result.pairs]))
    table = (result.animals or {}).get("table") or []
    if table:
        held = ((holdout or {}).get("animals") or {}).get("table") or []
        header = ["animals", "P(verdict right)", "interval"] + (["held out", "interval"] if held else [])
        rows = []
        for i, row in enumerate(table):
            cells = [str(row["animals"]), f"{row['p_correct']:.3f}", iv(row["ci"])]
            if held:
                cells += [f"{held[i]['p_correct']:.3f}", iv(held[i]["ci"])]
            rows.append(cells)
        tables.append(("M animals sharing one rule: how often the verdict is right", header, rows))
    thresholds = [[f"{e['noise']:g}", str(e["sessions"]),
                   str(e["units_point"]) if e["units_point"] is not None else "not reached",
                   str(e["units_conservative"]) if e["units_conservative"] is not None else "not reached",
                   _fmt_interval(e["units_interval"])] for e in result.thresholds]
    tables.append((f"Smallest number of units reaching {result.target:.0%} (selection networks)",
                   [_noise_short(result), "sessions", "point estimate", "conservative (lower bound)",
                    f"{result.confidence:.0%} interval (bootstrap)"], thresholds))
    return tables


def _answer_sentences(result: PowerResult) -> list[tuple[str, str]]:
    answers = result.answers or {}
    out = [("Recommendation", answers.get("recommendation") or result.sentence)]
    for key, title in (("holdout", "Held-out condition"), ("pairs", "Pairs of rules"), ("animals", "M animals")):
        if answers.get(key):
            out.append((title, answers[key]))
    return out


def _figures(result: PowerResult) -> list[tuple[str, str, str]]:
    """(file, alt text, caption) of every figure of the report."""
    captions = figure_captions(result)
    figures = [("power_heatmap.png", "heatmap", heatmap_caption(result)),
               ("power_units.png", "accuracy vs units", captions["units"]),
               ("power_sessions.png", "accuracy vs sessions", captions["sessions"]),
               ("power_confusion.png", "confusion", captions["confusion"])]
    if (result.animals or {}).get("table"):
        figures.append(("power_animals.png", "verdict vs animals", captions["animals"]))
    if result.pairs:
        figures.append(("power_pairs.png", "pairs of rules", captions["pairs"]))
    if result.holdout is not None:
        figures.append(("power_holdout.png", "held-out levels", captions["holdout"]))
    return figures


def calibration_note(result: PowerResult) -> str:
    """The sentence naming the pilot recordings a calibrated rig (``virtual-lab calibrate``) was measured from,
    or "" for any other rig."""
    rig = result.provenance.get("rig", {})
    pilots = rig.get("calibrated_from") or []
    if not pilots:
        return ""
    return (f"Rig {rig['name']} was calibrated from pilot recordings {', '.join(Path(p).name for p in pilots)} "
            f"(virtual-lab calibrate; each value's origin is in {rig.get('preset', 'the preset file')}).")


def power_markdown(result: PowerResult) -> str:
    """The report as Markdown: one sentence per question, the assumptions, the tables and the figures."""
    prov = result.provenance
    lines = [f"# Power analysis: {', '.join(short_rule(c) for c in result.classes)}", ""]
    for title, sentence in _answer_sentences(result):
        lines += [f"**{title}.** {sentence}", ""]
    lines += ["**Assumptions.**", ""] + [f"- {a}" for a in (result.answers or {}).get("assumptions", [])] + [""]
    lines += [f"{result.n_networks} networks ({_n_selection(result)} selection, {len(result.confirmation_networks)} "
              f"confirmation); rig **{prov['rig']['name']}** ({prov['rig']['description']}); decoder "
              f"{prov['decoder']}, {prov['n_splits']} grouped splits x {len(prov['rig_seeds'])} rig seeds per grid "
              f"point; chance {result.chance['chance']:.2f}, significance threshold {result.chance['threshold']:.2f} "
              f"over the {_n_selection(result)} selection networks. Seed {prov['seed']}.", ""]
    if calibration_note(result):
        lines += [calibration_note(result), ""]
    for title, header, rows in _answer_tables(result):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    for name, alt, caption in _figures(result):
        lines += [f"![{alt}]({name})", "", f"*{caption}*", ""]
    return "\n".join(lines)


def write_power_report(result: PowerResult, folder: str | Path) -> dict[str, Path]:
    """Write the table, summary, figures and the one-page HTML and Markdown reports of a power analysis.

    Parameters
    ----------
    result : PowerResult
    folder : str or Path
        Created if needed; existing files of the same names are replaced.

    Returns
    -------
    dict of str to Path
        ``table``, ``summary``, ``heatmap``, ``units``, ``sessions``, ``confusion``, ``animals`` (when there is
        an M-animals table), ``pairs`` (3 or more rules), ``holdout`` (with a held-out axis), ``html``,
        ``markdown``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"table": result.write_table(folder / "power_table.csv")}
    summary = result.summary()
    paths["summary"] = folder / "power_summary.json"
    paths["summary"].write_text(json.dumps(summary, indent=2, default=str) + "\n")
    paths.update(_write_figures(result, folder))
    paths["html"] = folder / "power_report.html"
    paths["html"].write_text(power_html(result))
    paths["markdown"] = folder / "power_report.md"
    paths["markdown"].write_text(power_markdown(result) + "\n")
    return paths


def _write_figures(result: PowerResult, folder: Path) -> dict[str, Path]:
    """Draw every figure of the report into ``folder``: name -> path (as :func:`write_power_report` returns)."""
    paths = {"heatmap": plot_heatmap(result, folder / "power_heatmap.png"),
             "units": plot_units(result, folder / "power_units.png"),
             "sessions": plot_sessions(result, folder / "power_sessions.png"),
             "confusion": plot_confusion_at(result, folder / "power_confusion.png")}
    if (result.animals or {}).get("table"):
        paths["animals"] = plot_animals(result, folder / "power_animals.png")
    if result.pairs:
        paths["pairs"] = plot_pairs(result, folder / "power_pairs.png")
    if result.holdout is not None:
        paths["holdout"] = plot_holdout(result, folder / "power_holdout.png")
    return paths


def power_html(result: PowerResult) -> str:
    """The report as one HTML page: the answers, the assumptions, how the grid was decoded, the figures (the
    PNGs :func:`write_power_report` writes next to it) and the tables."""
    esc = html.escape
    rec = result.recommendation
    pairs = rec["confused_pairs"]
    pair_text = ("; ".join(f"{p['pair'][0]} vs {p['pair'][1]}: {p['confusion_rate']:.0%} mistaken for each other"
                           + (" (confused)" if p["confused"] else "") for p in pairs) or "no pair is confused")
    skipped = "".join(f"<li>{esc(e['parameter'])} = {esc(str(e['value']))}: {esc(e['reason'])}</li>"
                      for e in result.skipped)
    violations = result.monotonicity_violations()
    prov = result.provenance
    sentences = _answer_sentences(result)
    answers = "".join(f"<p class=\"{'rec' if i == 0 else 'answer'}\"><b>{esc(title)}.</b> {esc(text)}</p>"
                      for i, (title, text) in enumerate(sentences))
    assumptions = "".join(f"<li>{esc(a)}</li>" for a in (result.answers or {}).get("assumptions", []))
    tables = "".join(
        f"<h2>{esc(title)}</h2><table><tr>{''.join(f'<th>{esc(h)}</th>' for h in header)}</tr>"
        + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows) + "</table>"
        for title, header, rows in _answer_tables(result))
    figures = "".join(f'<figure><img src="{name}" alt="{esc(alt)}"><figcaption>{esc(caption)}</figcaption></figure>\n'
                      for name, alt, caption in _figures(result))
    n_sel = _n_selection(result)
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>virtual_lab power analysis</title>
<style>body{{font-family:sans-serif;max-width:980px;margin:1em auto;font-size:14px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px}}
.rec{{font-size:17px;background:#eef5ff;padding:10px;border-left:4px solid #36c}}img{{max-width:100%}}
.answer{{background:#f6f6f6;padding:8px;border-left:4px solid #999}}
figure{{margin:1em 0}}figcaption{{font-size:13px;color:#333}}</style>
</head><body>
<h1>Power analysis: {esc(", ".join(short_rule(c) for c in result.classes))}</h1>
{answers}
<p><b>Assumptions.</b></p><ul>{assumptions}</ul>
<p>{result.n_networks} networks, split once into {n_sel} selection and {len(result.confirmation_networks)}
confirmation networks ({esc(str(prov.get('selection', '')))}); rig <b>{esc(str(prov['rig']['name']))}</b>
({esc(str(prov['rig']['description']))}); decoder {esc(str(prov['decoder']))}, {prov['n_splits']} grouped splits x
{len(prov['rig_seeds'])} rig seeds per grid point on the selection networks. Grid accuracies are network level,
their intervals {esc(prov['interval'])}; they are the estimates the protocol is chosen from, and optimistic at the
chosen point, which is why every answer is measured on the confirmation networks. Chance
{result.chance['chance']:.2f}, {result.confidence:.0%} chance interval [{result.chance['low']:.2f},
{result.chance['high']:.2f}], significance threshold {result.chance['threshold']:.2f} (binomial over {n_sel}
networks). Rule pairs confused at the operating point (confirmation networks): {esc(pair_text)}.</p>
{f'<p>{esc(calibration_note(result))}</p>' if calibration_note(result) else ''}
{figures}{tables}
{f'<h2>Skipped grid values</h2><ul>{skipped}</ul>' if skipped else ''}
<p>Monotonicity: {len(violations)} grid neighbour(s) where more units, less noise or more sessions
significantly hurt accuracy.</p>
<p>Files: power_table.csv (one row per rules x grid point x rig seed x split), power_summary.json,
power_report.md. Seed {prov['seed']}.</p>
</body></html>
"""
    return page
