"""``virtual-lab decode``: cross-validated rule decoding, controls and generalization from NWB sessions.

Writes into ``--output-dir`` (default ``<first RECORDINGS folder>/decode``):

- ``decode.csv``: the tidy table, one row per analysis x split x test network (analysis, rig, decoder,
  control, split, network_id, rule, predicted_rule, correct, n_layers, and the network's architecture,
  task, learning_rate, family);
- ``summary.json``: every analysis's summary (accuracy mean +/- s.e.m., balanced accuracy, confusion,
  d', Wilson interval, importances, permutation p-value, clustering scores) and the resolved seeds;
- figures: ``accuracy.png`` (every analysis), ``confusion.png`` (main analyses), ``importance.png``,
  and with the controls ``permutation.png`` and ``embedding.png``;
- with ``--holdout AXIS``: ``holdout_<AXIS>.csv`` (one row per decoder x feature set x held-out level:
  test networks, in-distribution accuracy, held-out accuracy with Wilson and bootstrap intervals,
  interpolation or extrapolation, the learning curves' held-out accuracy), ``holdout.json`` and
  ``holdout_<AXIS>.png`` (:mod:`virtual_lab.analysis.holdout`);
- unless ``--no-behaviour``: what the recording adds over behaviour (learning curves alone, observables
  alone, both, and both within performance-matched networks; :mod:`virtual_lab.analysis.behaviour`),
  printed and in ``summary.json`` under ``beyond_behaviour``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CLUSTER_CONTROL = "clustering"
TABLE_COLUMNS = ("analysis", "rig", "decoder", "features", "control", "target", "split", "network_id", "rule",
                 "predicted_rule", "correct", "n_layers", "architecture", "task", "learning_rate",
                 "learning_rate_scale", "family")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from virtual_lab.analysis.controls import CONTROLS

    parser = subparsers.add_parser(
        "decode", help="decode the learning rule from recorded sessions, with controls",
        description="Read NWB sessions, observe them through one or more rigs, and cross-validate decoders "
                    "of the learning rule (splits grouped by network). Controls (--control) and "
                    "generalization tests (--train-filter / --test-filter on session metadata, plus 'rig') "
                    "are one option each. Writes decode.csv (one row per split x test network), "
                    "summary.json and figures.",
        epilog="example:\n"
               "  virtual-lab decode recordings/quickstart\n"
               "  virtual-lab decode recordings/quickstart --rig 2p-gcamp6s   # decodes the activity it measures\n"
               "  virtual-lab decode recordings/quickstart --decoder random_forest --decoder linear_svm "
               "--control all\n"
               "  virtual-lab decode recordings/quickstart --control time_average --control performance_only\n"
               "  virtual-lab decode recordings/quickstart --train-filter learning_rate=0.01,0.02 "
               "--test-filter learning_rate=0.04\n"
               "  virtual-lab decode recordings/quickstart --rig full --rig paper-gaussian "
               "--train-filter rig=full --test-filter rig=paper-gaussian\n"
               "  virtual-lab decode recordings/quickstart --holdout learning_rate_scale "
               "--decoder random_forest --decoder linear_svm\n"
               "  virtual-lab decode recordings/robust --holdout learning_rate_scale --holdout-bins 8 "
               "--features paper --features paper+ratio",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recordings", nargs="+", type=Path, help="session files or folders of them")
    parser.add_argument("--rig", action="append", default=None, metavar="PRESET",
                        help="'full' (default) or a rig preset name/path (protocols/rigs); repeat for several")
    parser.add_argument("--decoder", action="append", default=None,
                        help="random_forest (default), linear_svm, logistic, conv1d; repeat for several")
    parser.add_argument("--control", action="append", default=[], metavar="NAME",
                        help=f"one of {', '.join(CONTROLS)}, {CLUSTER_CONTROL}, or 'all'; repeat for several")
    parser.add_argument("--train-filter", action="append", default=None, metavar="KEY=VALUE",
                        help="metadata filter of the training side (e.g. architecture=mlp, learning_rate=0.01,0.02, "
                             "rig=full, task!=digits); repeat to AND them")
    parser.add_argument("--test-filter", action="append", default=None, metavar="KEY=VALUE",
                        help="metadata filter of the test side (learning_rate_scale, the multiplier of the rule's "
                             "base rate, width and depth work too)")
    parser.add_argument("--holdout", action="append", default=None, metavar="AXIS",
                        help="hold out each level of a metadata axis in turn, training on the others: "
                             "learning_rate_scale, learning_rate, width, depth, batch_size, task, architecture, "
                             "paradigm, or rig (with several --rig: train on one preset's observations, test on "
                             "another's); repeat for several. Writes holdout_AXIS.csv/.png and holdout.json")
    parser.add_argument("--holdout-bins", type=int, default=None, metavar="K",
                        help="hold out K equal-width bins (log space for learning rates), both extremes "
                             "included, instead of single values; default: values, or 8 bins for an axis "
                             "with more than 12 distinct values (sampled from a prior)")
    parser.add_argument("--features", action="append", default=None, metavar="SET",
                        help="what the decoder sees: 'paper' (the observables, default), 'ratio' (each divided "
                             "by its initial value), 'layer_share' (each divided by its mean over the network's "
                             "layers), or 'paper+ratio' / 'paper+layer_share' (both side by side); repeat to "
                             "compare")
    parser.add_argument("--no-behaviour", action="store_true",
                        help="skip what the recording adds over behaviour (decoding the learning curves alone, "
                             "with the observables, and within performance-matched networks)")
    parser.add_argument("--grid", default="none", choices=("none", "small", "paper"),
                        help="nested hyperparameter selection inside every training split (default: none)")
    parser.add_argument("--n-splits", type=int, default=10, help="cross-validation splits (default 10)")
    parser.add_argument("--test-fraction", type=float, default=0.25, help="held-out fraction per rule (default 0.25)")
    parser.add_argument("--observables", default="admissible", metavar="SET",
                        help="'admissible' (the paper's 24, default), 'all' (45), or observable names separated by "
                             "commas (e.g. actraw_mean,actabs_norm); a rig preset keeps those of what it "
                             "measures (activity for imaging and electrophysiology, weights for EM and spines), "
                             "and a name it cannot measure is an error")
    parser.add_argument("--n-permutations", type=int, default=100, help="for --control permutation (default 100)")
    parser.add_argument("--cluster-method", default="kmeans", choices=("kmeans", "gmm"))
    parser.add_argument("--seed", type=int, default=0, help="seed of splits, decoders, shuffles (default 0)")
    parser.add_argument("--rig-seed", type=int, default=0, help="seed of the rig presets (default 0)")
    parser.add_argument("--jobs", type=int, default=None, help="parallel processes (default: all cores)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress")
    parser.add_argument("--output-dir", type=Path, default=None, help="where to write (default RECORDINGS/decode)")
    parser.set_defaults(func=run)
    return parser


def _controls(requested: list[str]) -> list[str]:
    from virtual_lab.analysis.controls import CONTROLS
    from virtual_lab.analysis.observables import _check_choice

    allowed = (*CONTROLS, CLUSTER_CONTROL, "all")
    out: list[str] = []
    for name in requested:
        _check_choice("control", name, allowed)
        out.extend((*CONTROLS, CLUSTER_CONTROL) if name == "all" else [name])
    return list(dict.fromkeys(out))


def _observables(text: str) -> tuple[tuple, bool]:
    """``--observables``: the observables and whether they were named one by one."""
    from virtual_lab.analysis.observables import ADMISSIBLE_OBSERVABLES, ALL_OBSERVABLES, _as_observables

    if text in ("admissible", "all"):
        return (ADMISSIBLE_OBSERVABLES if text == "admissible" else ALL_OBSERVABLES), False
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError("--observables must be 'admissible', 'all' or observable names separated by commas")
    return _as_observables(names), True


def _measured_controls(controls: list[str], named: set[str], rig: str, observables: tuple) -> list[str]:
    """Drop the observable-class controls of a measure none of the first rig's observables is of (those from
    ``all``, with a printed line); one named explicitly is an error."""
    from virtual_lab.analysis.controls import OBSERVABLE_CLASSES
    from virtual_lab.rig.presets import MEASURE_WORDS

    measured = {o.measure for o in observables}
    unmeasured = [c for c in controls if c in OBSERVABLE_CLASSES and OBSERVABLE_CLASSES[c] not in measured]
    for name in unmeasured:
        if name in named:
            raise ValueError(f"--control {name}: no observable of {MEASURE_WORDS[OBSERVABLE_CLASSES[name]]} is decoded "
                             f"through rig {rig} (only of {', '.join(sorted(measured))})")
    if unmeasured:
        print(f"controls {', '.join(unmeasured)} skipped: no observable of theirs is decoded through rig {rig}")
    return [c for c in controls if c not in unmeasured]


def _rows(analysis: str, rig: str, decoder: str, control: str, target: str, result: Any,
          meta_by_network: dict[str, dict], features: str = "paper") -> list[dict]:
    from virtual_lab.analysis.tables import derived_value

    rows = []
    for row in result.predictions:
        meta = meta_by_network.get(row["network_id"], {})
        rows.append({"analysis": analysis, "rig": rig, "decoder": decoder, "features": features, "control": control,
                     "target": target,
                     "split": row["split"], "network_id": row["network_id"], "rule": row["rule"],
                     "predicted_rule": row["predicted_rule"], "correct": int(row["correct"]),
                     "n_layers": row["n_layers"], "architecture": meta.get("architecture", ""),
                     "task": meta.get("task", ""), "learning_rate": meta.get("learning_rate", ""),
                     "learning_rate_scale": derived_value(meta, "learning_rate_scale") if meta else "",
                     "family": meta.get("family", "")})
    return rows


def run(args: argparse.Namespace) -> int:
    """Entry point of ``virtual-lab decode``."""
    from virtual_lab.analysis.clustering import cluster_runs, plot_embedding
    from virtual_lab.analysis.controls import run_control
    from virtual_lab.analysis.decoders import make_decoder
    from virtual_lab.analysis.evaluation import evaluate
    from virtual_lab.analysis.generalization import generalize
    from virtual_lab.analysis.permutation import PermutationResult
    from virtual_lab.analysis.session_tables import _complete_files, align_tables, rig_observables, tables_from_sessions
    from virtual_lab.analysis.behaviour import behaviour_markdown, beyond_behaviour
    from virtual_lab.analysis.controls import performance_table
    from virtual_lab.analysis.feature_variants import feature_set, feature_set_names
    from virtual_lab.analysis.observables import _check_choice
    from virtual_lab.analysis.tables import concat_tables

    started = time.perf_counter()
    decoders = list(dict.fromkeys(args.decoder or ["random_forest"]))
    for name in decoders:
        make_decoder(name)  # did-you-mean on typos, before any work
    feature_sets = list(dict.fromkeys(args.features or ["paper"]))
    for name in feature_sets:
        _check_choice("features", name, feature_set_names())
    holdouts = list(dict.fromkeys(args.holdout or []))
    filtered = args.train_filter is not None or args.test_filter is not None
    if holdouts and filtered:
        raise ValueError("--holdout and --train-filter/--test-filter both choose the test side; use one of them")
    if args.holdout_bins is not None and (not holdouts or args.holdout_bins < 2):
        raise ValueError("--holdout-bins needs --holdout and at least 2 bins")
    controls = _controls(args.control)
    rigs = list(dict.fromkeys(args.rig or ["full"]))
    if "rig" in holdouts and len(rigs) < 2:
        raise ValueError("--holdout rig trains on one rig preset's observations and tests on another's: give at "
                         "least two --rig")
    for flag, value in (("--n-splits", args.n_splits), ("--n-permutations", args.n_permutations)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if not 0 < args.test_fraction < 1:
        raise ValueError(f"--test-fraction must lie strictly between 0 and 1, got {args.test_fraction}")
    n_jobs = args.jobs or max(1, os.cpu_count() or 1)
    output = args.output_dir or (args.recordings[0] if args.recordings[0].is_dir() else args.recordings[0].parent) / "decode"
    output.mkdir(parents=True, exist_ok=True)

    observables, named = _observables(args.observables)
    paths = [str(p) for p in _complete_files([str(p) for p in args.recordings])]  # damaged files: warned once
    chosen = rig_observables(paths[0], rigs, observables, explicit=named, seed=args.rig_seed)
    for _, note in chosen.values():
        if note:
            print(note)  # e.g. "rig 2p-gcamp6s measures activity only: using its 8 activity observables ..."
    controls = _measured_controls(controls, set(args.control) - {"all"}, rigs[0], chosen[rigs[0]][0])
    tables, curves = tables_from_sessions(paths, rigs, {rig: kept for rig, (kept, _) in chosen.items()},
                                          seed=args.rig_seed, n_jobs=n_jobs)
    t_features = time.perf_counter() - started
    meta_by_network = {str(nid): dict(meta) for t in tables.values() for nid, meta in zip(t.network_id, t.metadata)}
    kwargs = dict(n_splits=args.n_splits, test_fraction=args.test_fraction, seed=args.seed, n_jobs=n_jobs,
                  param_grid=args.grid)
    views = {name: {rig: feature_set(table, name) for rig, table in tables.items()} for name in feature_sets}
    analyses: list[dict] = []
    rows: list[dict] = []
    extras: dict[str, Any] = {}
    main_results: dict[tuple[str, str, str], Any] = {}

    def record(analysis: str, rig: str, decoder: str, control: str, target: str, result: Any,
               features: str = feature_sets[0]) -> None:
        analyses.append({"analysis": analysis, "rig": rig, "decoder": decoder, "features": features,
                         "control": control, "target": target, "result": result, "summary": result.summary()})
        if not isinstance(result, PermutationResult):
            rows.extend(_rows(analysis, rig, decoder, control, target, result, meta_by_network, features))

    for rig in tables:
        if filtered and len(rigs) > 1:
            break  # train/test across rigs below
        for features in feature_sets:
            for decoder in decoders:
                table = views[features][rig]
                if filtered:
                    result = generalize(table, args.train_filter, args.test_filter, decoder, **kwargs)
                    record("generalization", rig, decoder, "", "rule", result, features)
                else:
                    main_results[(rig, features, decoder)] = evaluate(table, decoder, **kwargs)
                    record("main", rig, decoder, "", "rule", main_results[(rig, features, decoder)], features)
        if filtered and not args.no_behaviour:  # the same test on the learning curves alone
            for decoder in decoders:
                try:
                    result = generalize(performance_table(curves[rig]), args.train_filter, args.test_filter, decoder,
                                        **kwargs)
                except ValueError as error:
                    print(f"learning curves alone under the same filters: skipped ({error})")
                    break
                record("generalization", rig, decoder, "learning curves alone", "rule", result, "curves")
    if filtered and len(rigs) > 1:
        for features in feature_sets:
            aligned, note = align_tables(views[features])
            combined = concat_tables(list(aligned.values()))
            for decoder in decoders:
                result = generalize(combined, args.train_filter, args.test_filter, decoder, **kwargs)
                if note:
                    import dataclasses

                    result = dataclasses.replace(result, notes=result.notes + (note,))
                record("generalization", "+".join(rigs), decoder, "", "rule", result, features)
    holdout_summaries = _holdouts(args, holdouts, rigs, feature_sets, views, curves, decoders, main_results, kwargs,
                                  record, output)

    first_rig = next(iter(tables))
    first_table = views[feature_sets[0]][first_rig]
    if not filtered and not args.no_behaviour:
        extras["beyond_behaviour"] = [
            beyond_behaviour(first_table, curves[first_rig], decoder, rig=first_rig,
                             observables_result=main_results[(first_rig, feature_sets[0], decoder)], **kwargs).summary()
            for decoder in decoders]
    decoder = decoders[0]
    for name in controls:
        if name == CLUSTER_CONTROL:
            for rig in tables:
                clustering = cluster_runs(views[feature_sets[0]][rig], method=args.cluster_method, seed=args.seed)
                extras.setdefault("clustering", {})[rig] = clustering.summary()
                plot_embedding(clustering, output / f"embedding_{rig}.png")
            continue
        for label, result in run_control(name, first_table, decoder, recordings=curves[first_rig],
                                         n_permutations=args.n_permutations, **kwargs):
            target = "family" if name == "family" else "rule"
            record("control", first_rig, decoder, label, target, result)
    elapsed = time.perf_counter() - started

    with open(output / "decode.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "recordings": [str(p) for p in args.recordings], "rigs": rigs, "decoders": decoders, "controls": controls,
        "train_filter": args.train_filter, "test_filter": args.test_filter, "holdout": holdouts,
        "holdout_bins": args.holdout_bins, "features": feature_sets, "grid": args.grid,
        "n_splits": args.n_splits, "test_fraction": args.test_fraction, "seed": args.seed,
        "rig_seed": args.rig_seed, "n_networks": {rig: int(len(set(t.network_id.tolist()))) for rig, t in tables.items()},
        "analyses": [{k: v for k, v in a.items() if k != "result"} for a in analyses], **extras,
        **({"holdout_results": holdout_summaries} if holdouts else {}),
        "timings_s": {"features": t_features, "total": elapsed},
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _figures(analyses, output)
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
    print(f"wrote {output / 'decode.csv'} ({len(rows)} rows), summary.json and figures in {elapsed:.0f} s "
          f"(features {t_features:.0f} s)")
    return 0


def _holdouts(args: argparse.Namespace, axes: list[str], rigs: list[str], feature_sets: list[str],
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
