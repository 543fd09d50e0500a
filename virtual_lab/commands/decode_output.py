"""What ``virtual-lab decode`` writes and prints: the held-out tables, ``decode.csv``, ``summary.json``, the
figures and the closing lines (see :mod:`virtual_lab.commands.decode`)."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any, Sequence

__all__ = ["holdouts", "print_results", "write_outputs"]


def write_outputs(output: Path, rows: list[dict], summary: dict[str, Any], analyses: list[dict],
                  columns: Sequence[str]) -> None:
    """``decode.csv``, ``summary.json`` and the figures."""
    with open(output / "decode.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    (output / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _figures(analyses, output)


def print_results(analyses: list[dict], extras: dict[str, Any], n_rows: int, output: Path, elapsed: float,
                  t_features: float, skipped: list) -> int:
    """One line per analysis, clustering and the behaviour comparison, the skipped files; the exit status."""
    from virtual_lab.analysis.behaviour import behaviour_markdown
    from virtual_lab.analysis.permutation import PermutationResult
    from virtual_lab.commands import EXIT_FAILURE

    for a in analyses:
        if a["analysis"] == "holdout":
            continue  # in the generalization table printed above
        s = a["summary"]
        control = a["control"] or ("-" if a["features"] == "paper" else f"features {a['features']}")
        label = f"{a['analysis']:<14} {a['rig']:<14} {a['decoder']:<14} {control:<22}"
        if isinstance(a["result"], PermutationResult):
            print(f"{label} observed {s['observed']:.3f}  null {s['null_mean']:.3f}  p = {s['p_value']:.4f}")
        else:
            lo, hi = s["network_accuracy_wilson95"]
            print(f"{label} layer acc {s['layer_accuracy_mean']:.3f} +/- {s['layer_accuracy_sem'] or 0:.3f}  "
                  f"network acc {s['network_accuracy_mean']:.3f} +/- {s['network_accuracy_sem'] or 0:.3f} "
                  f"[{lo:.2f}, {hi:.2f}]  (chance {s['chance']:.2f}, {s['n_networks']} networks)")
    for rig, scores in extras.get("clustering", {}).items():
        text = ", ".join(f"{k} ARI {v['ari']:.2f} NMI {v['nmi']:.2f}" for k, v in scores["scores"].items()
                         if v["ari"] is not None)
        print(f"clustering     {rig:<14} {text}")
    if extras.get("beyond_behaviour"):
        print("\nwhat the recording adds over behaviour (same decoder, same network-grouped splits):")
        print("\n".join(behaviour_markdown(extras["beyond_behaviour"])[4:]))
    print(f"wrote {output / 'decode.csv'} ({n_rows} rows), summary.json and figures in {elapsed:.0f} s "
          f"(features {t_features:.0f} s)")
    if skipped:
        print(f"skipped {len(skipped)} input file(s) that are not complete, readable sessions (in summary.json):")
        for f in skipped:
            print(f"  {f.kind:<10} {f.path}: {f.reason}")
        return EXIT_FAILURE
    return 0


def holdouts(args: argparse.Namespace, axes: list[str], rigs: list[str], feature_sets: list[str],
              views: dict[str, dict[str, Any]], curves: dict[str, list], decoders: list[str],
              main_results: dict[tuple[str, str, str], Any], kwargs: dict[str, Any], record: Any,
              output: Path) -> list[dict]:
    """``--holdout``: every axis x rig x feature set x decoder; prints the generalization table of each axis
    and writes ``holdout_<axis>.csv`` / ``.png`` and ``holdout.json``. Returns the summaries."""
    import re

    from virtual_lab.analysis.controls import performance_table
    from virtual_lab.analysis.holdout import holdout_levels, holdout_markdown, holdout_table, plot_holdout
    from virtual_lab.analysis.session_tables import align_tables
    from virtual_lab.analysis.tables import concat_tables

    summaries: list[dict] = []
    for axis in axes:
        if axis == "rig":  # one network seen by every preset: stack the rigs' tables, hold out one preset
            targets = [("+".join(rigs), {f: concat_tables(list(align_tables(views[f])[0].values()))
                                         for f in feature_sets}, None)]
        else:
            targets = [(rig, {f: views[f][rig] for f in feature_sets}, curves[rig]) for rig in rigs]
        name = re.sub(r"[^\w.-]", "_", axis)
        try:  # an axis the sessions do not vary in: an error alone, a printed line among several axes
            levels = holdout_levels(next(iter(targets[0][1].values())), axis, args.holdout_bins)
            if len(levels.labels) < 2:
                raise ValueError(f"held-out {axis}: the sessions have a single {axis} ({levels.labels[0]}); "
                                 f"holding one out needs at least two")
        except ValueError as error:
            if len(axes) == 1:
                raise
            print(f"held-out {axis} skipped: {error}")
            summaries.append({"axis": axis, "skipped": str(error)})
            continue
        csv_rows: list[dict] = []
        for rig, by_features, rig_curves in targets:
            results = []
            perf = None
            if rig_curves is not None and not args.no_behaviour:
                try:
                    perf = performance_table(rig_curves)
                except ValueError as error:
                    print(f"held-out {axis}, learning curves alone: skipped ({error})")
            for index, (features, table) in enumerate(by_features.items()):
                for decoder in decoders:
                    result = holdout_table(table, axis, decoder, args.holdout_bins, features=features,
                                           curves=perf if index == 0 else None,
                                           in_distribution=main_results.get((rig, features, decoder)), **kwargs)
                    results.append(result)
                    for level in result.levels:
                        if level.held_out is not None:
                            record("holdout", rig, decoder, f"held-out {axis}: {level.label}", "rule",
                                   level.held_out, features)
                    csv_rows.extend({"rig": rig, **row} for row in result.rows())
                    summaries.append({"rig": rig, **result.summary()})
            print(f"\nheld-out {axis} (rig {rig}; {results[0].scale}):")
            print("\n".join(holdout_markdown(results)))
            suffix = "_" + re.sub(r"[^\w.-]", "_", rig) if len(targets) > 1 else ""
            plot_holdout(results, output / f"holdout_{name}{suffix}.png")
        with open(output / f"holdout_{name}.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(csv_rows[0]))
            writer.writeheader()
            writer.writerows(csv_rows)
    if axes:
        (output / "holdout.json").write_text(json.dumps(summaries, indent=2, default=str))
    return summaries


def _figures(analyses: list[dict], output: Path) -> None:
    import numpy as np

    from virtual_lab.analysis.permutation import PermutationResult
    from virtual_lab.analysis.report import _plt, plot_confusion

    plt = _plt()
    scored = [a for a in analyses if not isinstance(a["result"], PermutationResult)]
    if scored:
        fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(scored)), 3.8))
        x = np.arange(len(scored))
        for offset, level in ((-0.18, "layer"), (0.18, "network")):
            ax.bar(x + offset, [a["summary"][f"{level}_accuracy_mean"] for a in scored], width=0.36,
                   yerr=[a["summary"][f"{level}_accuracy_sem"] or 0 for a in scored], capsize=3,
                   label=f"{level} level")
        ax.scatter(x, [a["summary"]["chance"] for a in scored], marker="_", s=300, color="k", label="chance")
        ax.set_xticks(x, [f"{a['rig']}\n{a['decoder']}\n{a['control'] or a['analysis']}" for a in scored], fontsize=6)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("accuracy (mean +/- s.e.m.)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(output / "accuracy.png", dpi=110)
        plt.close(fig)
        main = [a for a in scored if a["analysis"] in ("main", "generalization")] or scored[:1]
        fig, axes = plt.subplots(1, len(main), figsize=(3.3 * len(main), 3.3), squeeze=False)
        for ax, a in zip(axes[0], main):
            plot_confusion(a["result"].network_confusion, a["result"].classes,
                           f"{a['rig']} / {a['decoder']}\nnetwork acc {a['summary']['network_accuracy_mean']:.2f}", ax)
        fig.tight_layout()
        fig.savefig(output / "confusion.png", dpi=110)
        plt.close(fig)
        with_importance = [a for a in main if a["summary"]["importance_by_observable"]]
        if with_importance:
            a = with_importance[0]
            items = list(a["summary"]["importance_by_observable"].items())[:15][::-1]
            fig, ax = plt.subplots(figsize=(5, 4))
            ax.barh([k for k, _ in items], [v for _, v in items])
            ax.set_xlabel("share of importance (summed over timepoints)")
            ax.set_title(f"{a['rig']} / {a['decoder']}", fontsize=9)
            ax.tick_params(labelsize=7)
            fig.tight_layout()
            fig.savefig(output / "importance.png", dpi=110)
            plt.close(fig)
    for a in analyses:
        if isinstance(a["result"], PermutationResult):
            r = a["result"]
            fig, ax = plt.subplots(figsize=(4.5, 3))
            ax.hist(r.null, bins=20, color="0.6", label="labels shuffled across networks")
            ax.axvline(r.observed, color="C3", label=f"observed (p = {r.p_value:.3f})")
            ax.set_xlabel(r.metric.replace("_", " "))
            ax.legend(fontsize=7)
            fig.tight_layout()
            fig.savefig(output / "permutation.png", dpi=110)
            plt.close(fig)
