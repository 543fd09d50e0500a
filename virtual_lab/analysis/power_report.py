"""Outputs of a power analysis: tidy CSV, JSON summary, figures and a one-page HTML report.

:func:`write_power_report` writes, into one folder::

    power_table.csv       one row per grid point x rig seed (repeat) x split
    power_summary.json    grid, accuracy and interval per point, answers, chance, skipped values, provenance
    power_heatmap.png     accuracy over units x noise, one panel per session count, target contour
    power_units.png       accuracy vs units with intervals, one line per noise level, one panel per session count
    power_sessions.png    accuracy vs sessions with intervals at the recommended number of units
    power_confusion.png   network-level confusion at the recommended (or best) point
    power_report.html     one page: the recommendation sentence, the figures, the answers table
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from virtual_lab.analysis.power import PowerResult, short_rule

__all__ = ["write_power_report", "plot_heatmap", "plot_units", "plot_sessions", "plot_confusion_at"]



def _noise_axis(result) -> str:
    """What the noise axis of a power analysis varies (older results: the paper rig's noise SD)."""
    return str(result.provenance.get("noise_axis", "noise SD"))


def _noise_short(result) -> str:
    axis = _noise_axis(result)
    return "noise" if axis.startswith("noise SD") else axis

def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _operating_point(result: PowerResult) -> dict[str, Any]:
    rec = result.recommendation
    return rec if rec["reached"] else rec["best"]


def plot_heatmap(result: PowerResult, path: Path) -> Path:
    """Accuracy over units (rows) x noise (columns), one panel per session count, with the target contour."""
    plt = _plt()
    n = len(result.sessions)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n + 0.8, 3.2), squeeze=False)
    image = None
    for s_i, k in enumerate(result.sessions):
        ax = axes[0, s_i]
        grid = result.accuracy[:, :, s_i]
        image = ax.imshow(grid, origin="lower", vmin=result.chance["chance"], vmax=1, cmap="viridis", aspect="auto")
        finite = ~np.isnan(grid)
        if finite.sum() >= 4 and np.nanmin(grid) < result.target < np.nanmax(grid):
            ax.contour(np.where(finite, grid, np.nanmin(grid)), levels=[result.target], colors="white",
                       linewidths=1.5)
        for (u_i, n_i), value in np.ndenumerate(grid):
            text = "skip" if np.isnan(value) else f"{value:.2f}"
            bold = not np.isnan(value) and result.ci_low[u_i, n_i, s_i] >= result.target
            ax.text(n_i, u_i, text, ha="center", va="center", fontsize=7, color="white" if value < 0.75 else "black",
                    fontweight="bold" if bold else "normal")
        ax.set_xticks(range(len(result.noise)), [f"{v:g}" for v in result.noise])
        ax.set_yticks(range(len(result.units)), [str(u) for u in result.units])
        ax.set_xlabel(_noise_axis(result))
        if s_i == 0:
            ax.set_ylabel("units per layer")
        ax.set_title(f"{k} sessions", fontsize=9)
    fig.colorbar(image, ax=axes[0, :].tolist(), label="network accuracy", shrink=0.9)
    fig.suptitle(f"accuracy; white line: target {result.target:.0%}; bold: lower bound >= target", fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _chance_band(ax, result: PowerResult) -> None:
    ax.axhspan(result.chance["low"], result.chance["high"], color="0.85", zorder=0, label="chance interval")
    ax.axhline(result.target, color="k", ls="--", lw=0.8, label=f"target {result.target:.0%}")


def plot_units(result: PowerResult, path: Path) -> Path:
    """Accuracy vs units with intervals, one line per noise level, one panel per session count."""
    plt = _plt()
    n = len(result.sessions)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.2), squeeze=False, sharey=True)
    units = np.array(result.units, dtype=float)
    for s_i, k in enumerate(result.sessions):
        ax = axes[0, s_i]
        _chance_band(ax, result)
        _lines_per_noise(ax, result, units, lambda n_i: (slice(None), n_i, s_i))
        ax.set_xscale("log")
        ax.set_xlabel("units per layer")
        ax.set_title(f"{k} sessions", fontsize=9)
        ax.set_ylim(0, 1.02)
    axes[0, 0].set_ylabel("network accuracy")
    axes[0, -1].legend(fontsize=7, loc="lower right")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _lines_per_noise(ax, result: PowerResult, x: np.ndarray, index) -> None:
    """One accuracy line with interval bars per noise level along ``x``; ``index(n_i)`` selects the grid line."""
    for n_i, sd in enumerate(result.noise):
        where = index(n_i)
        acc = result.accuracy[where]
        ok = ~np.isnan(acc)
        if not ok.any():
            continue
        low, high = result.ci_low[where][ok], result.ci_high[where][ok]
        ax.errorbar(x[ok], acc[ok], yerr=[acc[ok] - low, high - acc[ok]], marker="o", ms=3, capsize=2,
                    label=f"{_noise_short(result)} {sd:g}")


def plot_sessions(result: PowerResult, path: Path) -> Path:
    """Accuracy vs number of sessions at the recommended (or best) number of units, one line per noise."""
    plt = _plt()
    point = _operating_point(result)
    u_i = result.units.index(point["units"])
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    _chance_band(ax, result)
    sessions = np.array(result.sessions, dtype=float)
    _lines_per_noise(ax, result, sessions, lambda n_i: (u_i, n_i, slice(None)))
    ax.set_xlabel("sessions (checkpoints observed, evenly spaced)")
    ax.set_ylabel("network accuracy")
    ax.set_title(f"{point['units']} units per layer", fontsize=9)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_confusion_at(result: PowerResult, path: Path) -> Path:
    """Row-normalized network-level confusion at the recommended (or best) grid point."""
    plt = _plt()
    point = _operating_point(result)
    counts = result.confusion[result.units.index(point["units"]), result.noise.index(point["noise"]),
                              result.sessions.index(point["sessions"])].astype(float)
    totals = counts.sum(axis=1, keepdims=True)
    matrix = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    labels = [short_rule(c) for c in result.classes]
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted rule")
    ax.set_ylabel("true rule")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color="white" if value > 0.6 else "black")
    ax.set_title(f"{point['units']} units, {_noise_short(result)} {point['noise']:g}, {point['sessions']} sessions",
                 fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _fmt_interval(interval) -> str:
    low, high = interval
    return f"[{'-' if low is None else low}, {'> max tested' if high is None else high}]"


def write_power_report(result: PowerResult, folder: str | Path) -> dict[str, Path]:
    """Write the table, summary, figures and the one-page HTML report of a power analysis.

    Parameters
    ----------
    result : PowerResult
    folder : str or Path
        Created if needed; existing files of the same names are replaced.

    Returns
    -------
    dict of str to Path
        ``table``, ``summary``, ``heatmap``, ``units``, ``sessions``, ``confusion``, ``html``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"table": result.write_table(folder / "power_table.csv")}
    summary = result.summary()
    paths["summary"] = folder / "power_summary.json"
    paths["summary"].write_text(json.dumps(summary, indent=2, default=str) + "\n")
    paths["heatmap"] = plot_heatmap(result, folder / "power_heatmap.png")
    paths["units"] = plot_units(result, folder / "power_units.png")
    paths["sessions"] = plot_sessions(result, folder / "power_sessions.png")
    paths["confusion"] = plot_confusion_at(result, folder / "power_confusion.png")

    esc = html.escape
    rec = result.recommendation
    rows = []
    for entry in result.thresholds:
        rows.append(f"<tr><td>{entry['noise']:g}</td><td>{entry['sessions']}</td>"
                    f"<td>{entry['units_point'] if entry['units_point'] is not None else 'not reached'}</td>"
                    f"<td>{entry['units_conservative'] if entry['units_conservative'] is not None else 'not reached'}"
                    f"</td><td>{esc(_fmt_interval(entry['units_interval']))}</td></tr>")
    pairs = rec["confused_pairs"]
    pair_text = ("; ".join(f"{p['pair'][0]} vs {p['pair'][1]}: {p['confusion_rate']:.0%} mistaken for each other"
                           + (" (confused)" if p["confused"] else "") for p in pairs) or "no pair is confused")
    skipped = "".join(f"<li>{esc(e['parameter'])} = {esc(str(e['value']))}: {esc(e['reason'])}</li>"
                      for e in result.skipped)
    violations = result.monotonicity_violations()
    prov = result.provenance
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>virtual_lab power analysis</title>
<style>body{{font-family:sans-serif;max-width:980px;margin:1em auto;font-size:14px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px}}
.rec{{font-size:17px;background:#eef5ff;padding:10px;border-left:4px solid #36c}}img{{max-width:100%}}</style>
</head><body>
<h1>Power analysis: {esc(", ".join(short_rule(c) for c in result.classes))}</h1>
<p class="rec">{esc(result.sentence)}</p>
<p>{result.n_networks} networks; rig <b>{esc(str(prov['rig']['name']))}</b> ({esc(str(prov['rig']['description']))});
decoder {esc(str(prov['decoder']))}, {prov['n_splits']} grouped splits x {len(prov['rig_seeds'])} rig seeds per
grid point. Accuracy is network level; intervals are {esc(prov['interval'])}. Chance {result.chance['chance']:.2f},
{result.confidence:.0%} chance interval [{result.chance['low']:.2f}, {result.chance['high']:.2f}], significance
threshold {result.chance['threshold']:.2f} (binomial over {result.n_networks} networks).
Confused rule pairs at the operating point: {esc(pair_text)}.</p>
<p>With only {result.n_networks} networks the intervals are wide: an observed accuracy of 0.90 over
{result.n_networks} independent networks has a 95% Wilson interval of
[{_wilson_text(0.9, result.n_networks)}]. "Certified with M animals" is the number of independent test animals
at which the 95% Wilson lower bound at the observed accuracy reaches the target.</p>
<img src="power_heatmap.png" alt="heatmap">
<img src="power_units.png" alt="accuracy vs units">
<div style="display:flex;gap:1em"><img src="power_sessions.png" alt="accuracy vs sessions" style="max-width:55%">
<img src="power_confusion.png" alt="confusion" style="max-width:42%"></div>
<h2>Smallest number of units reaching {result.target:.0%}</h2>
<table><tr><th>{html.escape(_noise_short(result))}</th><th>sessions</th><th>point estimate</th><th>conservative (lower bound)</th>
<th>{result.confidence:.0%} interval (bootstrap)</th></tr>{''.join(rows)}</table>
{f'<h2>Skipped grid values</h2><ul>{skipped}</ul>' if skipped else ''}
<p>Monotonicity: {len(violations)} grid neighbour(s) where more units, less noise or more sessions
significantly hurt accuracy.</p>
<p>Files: power_table.csv (one row per grid point x rig seed x split), power_summary.json. Seed {prov['seed']}.</p>
</body></html>
"""
    paths["html"] = folder / "power_report.html"
    paths["html"].write_text(page)
    return paths


def _wilson_text(accuracy: float, n: int) -> str:
    from virtual_lab.analysis.power import wilson_interval

    low, high = wilson_interval(accuracy, n)
    return f"{low:.2f}, {high:.2f}"
