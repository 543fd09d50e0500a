"""Outputs of a power analysis: tidy CSV, JSON summary, figures and a one-page HTML report.

:func:`write_power_report` writes, into one folder::

    power_table.csv       one row per grid point x rig seed (repeat) x split
    power_summary.json    grid, accuracy and interval per point, answers, chance, skipped values, provenance
    power_heatmap.png     accuracy over units x noise, one panel per session count, cells reaching the target outlined
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

__all__ = ["write_power_report", "plot_heatmap", "plot_units", "plot_sessions", "plot_confusion_at", "heatmap_caption",
           "figure_captions"]



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


def _target_outline(reached: np.ndarray) -> list[list[tuple[float, float]]]:
    """Edges of the cells of an image grid where ``reached`` is True that border a cell where it is not (or
    the edge of the grid): the outline of the region that reaches the target, one segment per cell edge."""
    segments = []
    rows, cols = reached.shape
    for r, c in zip(*np.nonzero(reached)):
        left, right, bottom, top = c - .5, c + .5, r - .5, r + .5
        for dr, dc, edge in ((-1, 0, ((left, bottom), (right, bottom))), (1, 0, ((left, top), (right, top))),
                             (0, -1, ((left, bottom), (left, top))), (0, 1, ((right, bottom), (right, top)))):
            rr, cc = r + dr, c + dc
            if not (0 <= rr < rows and 0 <= cc < cols and reached[rr, cc]):
                segments.append([tuple(map(float, point)) for point in edge])
    return segments


def _any_reached(result: PowerResult) -> bool:
    return bool(np.any(np.nan_to_num(result.accuracy, nan=-np.inf) >= result.target))


def heatmap_caption(result: PowerResult) -> str:
    """What :func:`plot_heatmap` draws, in one sentence (the report's caption)."""
    reached = _any_reached(result)
    outline = (f"white outline: the cells at or above the {result.target:.0%} target" if reached
               else f"no cell reaches the {result.target:.0%} target (such cells would be outlined in white)")
    skip = "; 'skip': a grid value the recordings cannot support" if np.isnan(result.accuracy).any() else ""
    return (f"Network accuracy at each grid point (colour and number), units per layer against "
            f"{_noise_axis(result)}, one panel per number of sessions; {outline}; bold number: the lower bound of "
            f"its {result.confidence:.0%} interval is at or above the target too{skip}.")


def plot_heatmap(result: PowerResult, path: Path) -> Path:
    """Accuracy over units (rows) x noise (columns), one panel per session count; the cells reaching the target
    are outlined (see :func:`heatmap_caption`)."""
    from matplotlib import patheffects
    from matplotlib.collections import LineCollection

    plt = _plt()
    n = len(result.sessions)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n + 0.8, 3.2), squeeze=False)
    image = None
    low = result.chance["chance"]
    for s_i, k in enumerate(result.sessions):
        ax = axes[0, s_i]
        grid = result.accuracy[:, :, s_i]
        image = ax.imshow(grid, origin="lower", vmin=low, vmax=1, cmap="viridis", aspect="auto")
        outline = _target_outline(np.nan_to_num(grid, nan=-np.inf) >= result.target)
        if outline:
            ax.add_collection(LineCollection(outline, colors="white", linewidths=2, capstyle="projecting",
                                             path_effects=[patheffects.withStroke(linewidth=3.5, foreground="k")]))
        for (u_i, n_i), value in np.ndenumerate(grid):
            text = "skip" if np.isnan(value) else f"{value:.2f}"
            bold = not np.isnan(value) and result.ci_low[u_i, n_i, s_i] >= result.target
            dark = not np.isnan(value) and (value - low) / max(1 - low, 1e-9) < 0.5  # the darker half of viridis
            ax.text(n_i, u_i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black",
                    fontweight="bold" if bold else "normal")
        ax.set_xticks(range(len(result.noise)), [f"{v:g}" for v in result.noise])
        ax.set_yticks(range(len(result.units)), [str(u) for u in result.units])
        ax.set_xlabel(_noise_axis(result))
        if s_i == 0:
            ax.set_ylabel("units per layer")
        ax.set_title(f"{k} sessions", fontsize=9)
    fig.colorbar(image, ax=axes[0, :].tolist(), label="network accuracy", shrink=0.9)
    title = (f"white outline: accuracy >= target {result.target:.0%}" if _any_reached(result)
             else f"no cell reaches the target {result.target:.0%}")
    fig.suptitle(f"network accuracy; {title}; bold: interval lower bound >= target", fontsize=9, y=1.0,
                 va="bottom")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _chance_band(ax, result: PowerResult) -> None:
    ax.axhspan(result.chance["low"], result.chance["high"], color="0.85", zorder=0,
               label=f"{result.confidence:.0%} chance interval")
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
        ax.set_xscale("log")
        _lines_per_noise(ax, result, units, lambda n_i: (slice(None), n_i, s_i), log=True)
        _tested_ticks(ax, result.units)
        ax.set_xlabel("units per layer")
        ax.set_title(f"{k} sessions", fontsize=9)
        ax.set_ylim(0, 1.02)
    axes[0, 0].set_ylabel("network accuracy")
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the data, not on it
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


#: Sideways shift between the noise levels' points at one grid value (fraction of the axis span, or of a
#: decade on a log axis), so that their interval bars do not hide each other.
DODGE = 0.025


def _lines_per_noise(ax, result: PowerResult, x: np.ndarray, index, *, log: bool = False) -> None:
    """One accuracy line with interval bars per noise level along ``x``; ``index(n_i)`` selects the grid line.

    The noise levels' points are shifted sideways by :data:`DODGE` around each tested value (multiplicatively
    on a log axis)."""
    n = len(result.noise)
    span = float(np.ptp(x)) if len(x) > 1 and np.ptp(x) > 0 else 1.0
    for n_i, sd in enumerate(result.noise):
        where = index(n_i)
        acc = result.accuracy[where]
        ok = ~np.isnan(acc)
        if not ok.any():
            continue
        shift = (n_i - (n - 1) / 2) * DODGE
        xs = x[ok] * 10 ** shift if log else x[ok] + shift * span
        low, high = result.ci_low[where][ok], result.ci_high[where][ok]
        ax.errorbar(xs, acc[ok], yerr=[acc[ok] - low, high - acc[ok]], marker="o", ms=3, capsize=2,
                    label=f"{_noise_short(result)} {sd:g}")


def _tested_ticks(ax, values) -> None:
    """Ticks at the tested grid values only (no decades, no minor ticks)."""
    from matplotlib.ticker import NullLocator

    ax.set_xticks([float(v) for v in values], [f"{v:g}" for v in values])
    ax.xaxis.set_minor_locator(NullLocator())


def plot_sessions(result: PowerResult, path: Path) -> Path:
    """Accuracy vs number of sessions at the recommended (or best) number of units, one line per noise."""
    plt = _plt()
    point = _operating_point(result)
    u_i = result.units.index(point["units"])
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    _chance_band(ax, result)
    sessions = np.array(result.sessions, dtype=float)
    _lines_per_noise(ax, result, sessions, lambda n_i: (u_i, n_i, slice(None)))
    _tested_ticks(ax, result.sessions)
    ax.set_xlabel("sessions (checkpoints observed, evenly spaced)")
    ax.set_ylabel("network accuracy")
    ax.set_title(f"{point['units']} units per layer", fontsize=9)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="best")
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


def figure_captions(result: PowerResult) -> dict[str, str]:
    """What the units, sessions and confusion figures draw (``units``, ``sessions``, ``confusion``); the heatmap's
    is :func:`heatmap_caption`."""
    noise = _noise_short(result)
    point = _operating_point(result)
    where = "the recommended point" if result.recommendation["reached"] else "the best point (none reaches the target)"
    bars = (f"points: network accuracy at each tested value; bars: its interval "
            f"({result.provenance.get('interval', 'bootstrap over networks')}), the {noise} levels' points shifted "
            "slightly sideways so that their bars stay apart; grey band: "
            f"the {result.confidence:.0%} chance interval of {result.n_networks} networks; dashed line: the target "
            f"{result.target:.0%}.")
    return {
        "units": f"Network accuracy against units recorded per layer, one panel per number of sessions, one line per "
                 f"{noise} level; " + bars,
        "sessions": f"Network accuracy against the number of sessions at {point['units']} units per layer ({where}), "
                    f"one line per {noise} level; " + bars,
        "confusion": f"Network-level confusion at {where}: {point['units']} units, {noise} {point['noise']:g}, "
                     f"{point['sessions']} sessions. Rows: true rule; columns: predicted rule; a cell is the fraction "
                     "of the row's networks, pooled over splits and rig seeds, predicted as the column's rule.",
    }


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
    captions = figure_captions(result)
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>virtual_lab power analysis</title>
<style>body{{font-family:sans-serif;max-width:980px;margin:1em auto;font-size:14px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px}}
.rec{{font-size:17px;background:#eef5ff;padding:10px;border-left:4px solid #36c}}img{{max-width:100%}}
figure{{margin:1em 0}}figcaption{{font-size:13px;color:#333}}</style>
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
<figure><img src="power_heatmap.png" alt="heatmap"><figcaption>{esc(heatmap_caption(result))}</figcaption></figure>
<figure><img src="power_units.png" alt="accuracy vs units"><figcaption>{esc(captions["units"])}</figcaption></figure>
<div style="display:flex;gap:1em">
<figure style="max-width:55%"><img src="power_sessions.png" alt="accuracy vs sessions">
<figcaption>{esc(captions["sessions"])}</figcaption></figure>
<figure style="max-width:42%"><img src="power_confusion.png" alt="confusion">
<figcaption>{esc(captions["confusion"])}</figcaption></figure></div>
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
