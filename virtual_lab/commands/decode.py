"""``virtual-lab decode``: cross-validated rule decoding, controls and generalization from NWB sessions.

Writes into ``--output-dir`` (default ``<first RECORDINGS folder>/decode``):

- ``decode.csv``: the tidy table, one row per analysis x split x test network (analysis, rig, decoder,
  control, split, network_id, rule, predicted_rule, correct, n_layers, and the network's architecture,
  task, learning_rate, family);
- ``summary.json``: every analysis's summary (accuracy mean +/- s.e.m., balanced accuracy, confusion,
  d', Wilson interval, importances, permutation p-value, clustering scores) and the resolved seeds;
- figures: ``accuracy.png`` (every analysis), ``confusion.png`` (main analyses), ``importance.png``,
  and with the controls ``permutation.png`` and ``embedding.png``.
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
TABLE_COLUMNS = ("analysis", "rig", "decoder", "control", "target", "split", "network_id", "rule",
                 "predicted_rule", "correct", "n_layers", "architecture", "task", "learning_rate", "family")


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
               "--train-filter rig=full --test-filter rig=paper-gaussian",
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
                        help="metadata filter of the test side")
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
          meta_by_network: dict[str, dict]) -> list[dict]:
    rows = []
    for row in result.predictions:
        meta = meta_by_network.get(row["network_id"], {})
        rows.append({"analysis": analysis, "rig": rig, "decoder": decoder, "control": control, "target": target,
                     "split": row["split"], "network_id": row["network_id"], "rule": row["rule"],
                     "predicted_rule": row["predicted_rule"], "correct": int(row["correct"]),
                     "n_layers": row["n_layers"], "architecture": meta.get("architecture", ""),
                     "task": meta.get("task", ""), "learning_rate": meta.get("learning_rate", ""),
                     "family": meta.get("family", "")})
    return rows


def run(args: argparse.Namespace) -> int:
    """Entry point of ``virtual-lab decode``."""
    from virtual_lab.analysis import controls as C
    from virtual_lab.analysis.clustering import cluster_runs, plot_embedding
    from virtual_lab.analysis.decoders import make_decoder
    from virtual_lab.analysis.evaluation import PermutationResult, evaluate

    started = time.perf_counter()
    decoders = list(dict.fromkeys(args.decoder or ["random_forest"]))
    for name in decoders:
        make_decoder(name)  # did-you-mean on typos, before any work
    controls = _controls(args.control)
    rigs = list(dict.fromkeys(args.rig or ["full"]))
    for flag, value in (("--n-splits", args.n_splits), ("--n-permutations", args.n_permutations)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if not 0 < args.test_fraction < 1:
        raise ValueError(f"--test-fraction must lie strictly between 0 and 1, got {args.test_fraction}")
    n_jobs = args.jobs or max(1, os.cpu_count() or 1)
    output = args.output_dir or (args.recordings[0] if args.recordings[0].is_dir() else args.recordings[0].parent) / "decode"
    output.mkdir(parents=True, exist_ok=True)

    observables, named = _observables(args.observables)
    paths = [str(p) for p in C._complete_files([str(p) for p in args.recordings])]  # damaged files: warned once
    chosen = C.rig_observables(paths[0], rigs, observables, explicit=named, seed=args.rig_seed)
    for _, note in chosen.values():
        if note:
            print(note)  # e.g. "rig 2p-gcamp6s measures activity only: using its 8 activity observables ..."
    controls = _measured_controls(controls, set(args.control) - {"all"}, rigs[0], chosen[rigs[0]][0])
    tables, curves = C.tables_from_sessions(paths, rigs, {rig: kept for rig, (kept, _) in chosen.items()},
                                            seed=args.rig_seed, n_jobs=n_jobs)
    t_features = time.perf_counter() - started
    meta_by_network = {str(nid): dict(meta) for t in tables.values() for nid, meta in zip(t.network_id, t.metadata)}
    kwargs = dict(n_splits=args.n_splits, test_fraction=args.test_fraction, seed=args.seed, n_jobs=n_jobs,
                  param_grid=args.grid)
    analyses: list[dict] = []
    rows: list[dict] = []
    extras: dict[str, Any] = {}

    def record(analysis: str, rig: str, decoder: str, control: str, target: str, result: Any) -> None:
        analyses.append({"analysis": analysis, "rig": rig, "decoder": decoder, "control": control,
                         "target": target, "result": result, "summary": result.summary()})
        if not isinstance(result, PermutationResult):
            rows.extend(_rows(analysis, rig, decoder, control, target, result, meta_by_network))

    filtered = args.train_filter is not None or args.test_filter is not None
    for rig, table in tables.items():
        if filtered and len(rigs) > 1:
            break  # train/test across rigs below
        for decoder in decoders:
            if filtered:
                result = C.generalize(table, args.train_filter, args.test_filter, decoder, **kwargs)
                record("generalization", rig, decoder, "", "rule", result)
            else:
                record("main", rig, decoder, "", "rule", evaluate(table, decoder, **kwargs))
    if filtered and len(rigs) > 1:
        aligned, note = C.align_tables(tables)
        combined = C.concat_tables(list(aligned.values()))
        for decoder in decoders:
            result = C.generalize(combined, args.train_filter, args.test_filter, decoder, **kwargs)
            if note:
                import dataclasses

                result = dataclasses.replace(result, notes=result.notes + (note,))
            record("generalization", "+".join(rigs), decoder, "", "rule", result)

    first_rig, first_table = next(iter(tables.items()))
    decoder = decoders[0]
    for name in controls:
        if name == CLUSTER_CONTROL:
            for rig, table in tables.items():
                clustering = cluster_runs(table, method=args.cluster_method, seed=args.seed)
                extras.setdefault("clustering", {})[rig] = clustering.summary()
                plot_embedding(clustering, output / f"embedding_{rig}.png")
            continue
        for label, result in C.run_control(name, first_table, decoder, recordings=curves[first_rig],
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
        "train_filter": args.train_filter, "test_filter": args.test_filter, "grid": args.grid,
        "n_splits": args.n_splits, "test_fraction": args.test_fraction, "seed": args.seed,
        "rig_seed": args.rig_seed, "n_networks": {rig: int(len(set(t.network_id.tolist()))) for rig, t in tables.items()},
        "analyses": [{k: v for k, v in a.items() if k != "result"} for a in analyses], **extras,
        "timings_s": {"features": t_features, "total": elapsed},
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _figures(analyses, output)
    for a in analyses:
        s = a["summary"]
        label = f"{a['analysis']:<14} {a['rig']:<14} {a['decoder']:<14} {a['control'] or '-':<22}"
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
    print(f"wrote {output / 'decode.csv'} ({len(rows)} rows), summary.json and figures in {elapsed:.0f} s "
          f"(features {t_features:.0f} s)")
    return 0


def _figures(analyses: list[dict], output: Path) -> None:
    import numpy as np

    from virtual_lab.analysis.evaluation import PermutationResult
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
