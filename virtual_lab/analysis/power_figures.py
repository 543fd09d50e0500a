"""Figures of a power analysis and their captions, as
:func:`virtual_lab.analysis.power_report.write_power_report` writes them.

Each ``plot_*`` function draws one figure of the report into a PNG and returns its path::

    plot_heatmap        selection accuracy over units x noise, one panel per session count, cells reaching the
                        target outlined, the recommended cell boxed with its confirmed accuracy
    plot_units          selection accuracy vs units with intervals, and the confirmed accuracy
    plot_sessions       selection accuracy vs sessions at the recommended number of units, and the confirmed
    plot_confusion_at   the confirmation networks' confusion at the recommended (or best) point
    plot_animals        P(the verdict over M animals is right) against M, with intervals
    plot_pairs          per pair of rules: its protocol and confirmed accuracy (3 or more rules)
    plot_holdout        per held-out level: accuracy held out and simulated

:func:`heatmap_caption` and :func:`figure_captions` say what each figure shows, for the HTML and Markdown pages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from virtual_lab.analysis.power import PowerResult, short_rule

__all__ = ["plot_heatmap", "plot_units", "plot_sessions", "plot_confusion_at", "plot_animals", "plot_pairs",
           "plot_holdout", "heatmap_caption", "figure_captions"]


def _noise_axis(result) -> str:
    """What the noise axis of a power analysis varies (older results: the paper rig's noise SD)."""
    return str(result.provenance.get("noise_axis", "noise SD"))


def _noise_short(result) -> str:
    axis = _noise_axis(result)
    return "noise" if axis.startswith("noise SD") else axis


def _n_selection(result) -> int:
    return len(getattr(result, "selection_networks", ()) or ()) or int(getattr(result, "n_networks", 0))


def _confirmed(result) -> dict[str, Any]:
    """The confirmed accuracy at the operating point (empty for results without a confirmation part)."""
    confirmation = getattr(result, "confirmation", None) or {}
    return confirmation if confirmation.get("accuracy") is not None else {}


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
    box = (f"; black box: the recommended protocol, chosen on these networks and confirmed on "
           f"{len(result.confirmation_networks)} others (its confirmed accuracy in the title)"
           if _confirmed(result) else "")
    return (f"Network accuracy at each grid point (colour and number), cross-validated on the "
            f"{_n_selection(result)} selection networks the protocol is chosen from, units per layer against "
            f"{_noise_axis(result)}, one panel per number of sessions; {outline}; bold number: the lower bound of "
            f"its {result.confidence:.0%} interval is at or above the target too{box}{skip}.")


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
        confirmed = _confirmed(result)
        if confirmed and confirmed["point"]["sessions"] == k:
            from matplotlib.patches import Rectangle

            u_i, n_i = result.units.index(confirmed["point"]["units"]), result.noise.index(confirmed["point"]["noise"])
            ax.add_patch(Rectangle((n_i - 0.5, u_i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.5,
                                   linestyle="--"))
        ax.set_xticks(range(len(result.noise)), [f"{v:g}" for v in result.noise])
        ax.set_yticks(range(len(result.units)), [str(u) for u in result.units])
        ax.set_xlabel(_noise_axis(result))
        if s_i == 0:
            ax.set_ylabel("units per layer")
        ax.set_title(f"{k} sessions", fontsize=9)
    fig.colorbar(image, ax=axes[0, :].tolist(), label="network accuracy", shrink=0.9)
    title = (f"white outline: accuracy >= target {result.target:.0%}" if _any_reached(result)
             else f"no cell reaches the target {result.target:.0%}")
    confirmed = _confirmed(result)
    box = (f"\nblack box: recommended, confirmed on {confirmed['n']} other networks: {confirmed['accuracy']:.2f} "
           f"[{confirmed['wilson'][0]:.2f}, {confirmed['wilson'][1]:.2f}]" if confirmed else "")
    fig.suptitle(f"accuracy on the {_n_selection(result)} selection networks; {title}; bold: interval lower bound "
                 f">= target{box}", fontsize=9, y=1.0, va="bottom")
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
        confirmed = _confirmed(result)
        if confirmed and confirmed["point"]["sessions"] == k:
            _confirmed_marker(ax, confirmed, confirmed["point"]["units"])
        _tested_ticks(ax, result.units)
        ax.set_xlabel("units per layer")
        ax.set_title(f"{k} sessions", fontsize=9)
        ax.set_ylim(0, 1.02)
    axes[0, 0].set_ylabel("network accuracy")
    handles = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    axes[0, -1].legend(list(handles.values()), list(handles), fontsize=7, loc="upper left",
                       bbox_to_anchor=(1.02, 1.0))  # beside the data, not on it
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


def _confirmed_marker(ax, confirmed: dict[str, Any], x: float) -> None:
    """The confirmed accuracy at the recommended point: a black star with its Wilson interval."""
    low, high = confirmed["wilson"]
    acc = confirmed["accuracy"]
    ax.errorbar([x], [acc], yerr=[[max(acc - low, 0)], [max(high - acc, 0)]], marker="*", ms=11, color="black",
                capsize=3, lw=1.5, zorder=5, label=f"confirmed ({confirmed['n']} other networks, noise "
                                        f"{confirmed['point']['noise']:g})")


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
    confirmed = _confirmed(result)
    if confirmed:
        _confirmed_marker(ax, confirmed, confirmed["point"]["sessions"])
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
    """Row-normalized network-level confusion at the recommended (or best) grid point: of the confirmation
    networks (a decoder trained on the selection networks) when there are any, else of the selection grid."""
    plt = _plt()
    point = _operating_point(result)
    confirmed = _confirmed(result)
    if confirmed:
        counts = np.asarray(confirmed["confusion"], dtype=float)
    else:
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
    where = f"{confirmed['n']} confirmation networks" if confirmed else "selection networks"
    ax.set_title(f"{point['units']} units, {_noise_short(result)} {point['noise']:g}, {point['sessions']} sessions\n"
                 f"{where}", fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def figure_captions(result: PowerResult) -> dict[str, str]:
    """What each figure but the heatmap draws (``units``, ``sessions``, ``confusion``, ``animals``, ``pairs``,
    ``holdout``); the heatmap's is :func:`heatmap_caption`."""
    noise = _noise_short(result)
    point = _operating_point(result)
    where = "the recommended point" if result.recommendation["reached"] else "the best point (none reaches the target)"
    confirmed = _confirmed(result)
    n_sel = _n_selection(result)
    star = (f"; black star: the accuracy at the recommended protocol confirmed on {confirmed['n']} other networks "
            f"(a decoder trained on the selection networks), with its {result.confidence:.0%} Wilson interval"
            if confirmed else "")
    bars = (f"points: network accuracy cross-validated on the {n_sel} selection networks at each tested value; bars: "
            f"its interval ({result.provenance.get('interval', 'bootstrap over networks')}), the {noise} levels' "
            "points shifted slightly sideways so that their bars stay apart; grey band: "
            f"the {result.confidence:.0%} chance interval of {n_sel} networks; dashed line: the target "
            f"{result.target:.0%}{star}.")
    whose = (f"the {confirmed['n']} confirmation networks, decoded by a decoder trained on the selection networks "
             f"(a network counted in proportion to the rig repeats naming each rule)" if confirmed
             else "the selection networks, pooled over splits and rig seeds")
    captions = {
        "units": f"Network accuracy against units recorded per layer, one panel per number of sessions, one line per "
                 f"{noise} level; " + bars,
        "sessions": f"Network accuracy against the number of sessions at {point['units']} units per layer ({where}), "
                    f"one line per {noise} level; " + bars,
        "confusion": f"Network-level confusion at {where}: {point['units']} units, {noise} {point['noise']:g}, "
                     f"{point['sessions']} sessions, of {whose}. Rows: true rule; columns: predicted rule; a cell is "
                     "the fraction of the row's networks predicted as the column's rule.",
        "animals": "Probability that the verdict over M recorded animals sharing one rule names it (posterior "
                   "argmax, uniform prior, the confirmation networks' smoothed confusion as likelihood, exact over "
                   f"every count vector of predictions), against M; bars: {result.confidence:.0%} bootstrap "
                   "interval over the confirmation networks"
                   + ("; grey: the same with the held-out-condition confusion (pooled over left-out levels)"
                      if (getattr(result, "holdout", None) or {}).get("animals", {}).get("table") else "") + ".",
        "pairs": f"For each pair of rules, the accuracy of a decoder trained on the two rules only at the pair's "
                 f"protocol (chosen on its selection networks; label: units, sessions, {noise}): open circle, "
                 f"cross-validated on the selection networks; filled, confirmed on the confirmation networks with "
                 f"its {result.confidence:.0%} Wilson interval; dashed line: the target.",
        "holdout": "For each level of the held-out axis at the recommended protocol: filled, the accuracy on that "
                   "level's confirmation networks when the level was left out of training (decoder trained on the "
                   "selection networks of the other levels), with its Wilson interval; open, the same networks when "
                   "their level was simulated (decoder trained on every selection network); dashed line: the target.",
    }
    return captions


def plot_animals(result: PowerResult, path: Path) -> Path:
    """P(the M-animal verdict is right) against M, with its bootstrap interval (and the held-out one)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.4, 3.2))
    series = [("in-distribution", result.animals.get("table") or [], "C0")]
    held = ((result.holdout or {}).get("animals") or {}).get("table") or []
    if held:
        series.append((f"{result.holdout['axis']} held out", held, "0.5"))
    for label, table, color in series:
        m = np.array([row["animals"] for row in table], dtype=float)
        p = np.array([row["p_correct"] for row in table])
        low = np.array([row["ci"][0] for row in table])
        high = np.array([row["ci"][1] for row in table])
        # a percentile interval need not contain the point estimate (ties of a symmetric confusion): clip
        ax.errorbar(m, p, yerr=[np.maximum(p - low, 0), np.maximum(high - p, 0)], marker="o", capsize=3,
                    color=color, label=label)
    ax.axhline(result.target, color="k", ls="--", lw=0.8, label=f"target {result.target:.0%}")
    ax.set_xscale("log")
    _tested_ticks(ax, [row["animals"] for row in series[0][1]])
    ax.set_xlabel("animals recorded (sharing one rule)")
    ax.set_ylabel("P(verdict right)")
    ax.set_ylim(min(0.5, ax.get_ylim()[0]), 1.02)
    ax.legend(fontsize=7, loc="lower right")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_pairs(result: PowerResult, path: Path) -> Path:
    """Per pair of rules: selected (open) and confirmed (filled, Wilson interval) accuracy at its protocol."""
    plt = _plt()
    pairs = list(result.pairs)
    fig, ax = plt.subplots(figsize=(5.6, 0.42 * len(pairs) + 1.0))
    noise = _noise_short(result)
    for i, p in enumerate(pairs):
        confirmed = p["confirmed"]
        ax.plot(p["selected"]["accuracy"], i, marker="o", mfc="none", color="C0")
        if confirmed["accuracy"] is not None:
            low, high = confirmed["wilson"]
            ax.errorbar(confirmed["accuracy"], i, xerr=[[confirmed["accuracy"] - low], [high - confirmed["accuracy"]]],
                        marker="o", color="C0", capsize=3)
        ax.text(1.02, i, f"{p['units']} u, {p['sessions']} s, {noise} {p['noise']:g} ({p['category']})",
                va="center", fontsize=7, transform=ax.get_yaxis_transform())
    ax.axvline(result.target, color="k", ls="--", lw=0.8)
    ax.set_yticks(range(len(pairs)), [p["label"] for p in pairs])
    ax.invert_yaxis()
    ax.set_xlim(min(0.4, ax.get_xlim()[0]), 1.03)
    ax.set_xlabel("pairwise network accuracy")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_holdout(result: PowerResult, path: Path) -> Path:
    """Per held-out level: accuracy held out (filled, Wilson interval) and simulated (open)."""
    plt = _plt()
    rows = result.holdout["levels"]
    fig, ax = plt.subplots(figsize=(max(3.6, 0.6 * len(rows) + 1.6), 3.2))
    x = np.arange(len(rows))
    for i, row in enumerate(rows):
        if row["accuracy"] is not None:
            low, high = row["wilson"]
            ax.errorbar(i, row["accuracy"], yerr=[[row["accuracy"] - low], [high - row["accuracy"]]], marker="o",
                        color="C3", capsize=3, label="held out" if i == 0 else None)
        inside = row["in_distribution"]["accuracy"]
        if inside is not None:
            ax.plot(i, inside, marker="o", mfc="none", color="C0", label="simulated" if i == 0 else None)
    ax.axhline(result.target, color="k", ls="--", lw=0.8)
    ax.set_xticks(x, [row["level"] for row in rows], rotation=30 if len(rows) > 5 else 0)
    ax.set_xlabel(f"{result.holdout['axis']} (level left out)")
    ax.set_ylabel("network accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower left")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
