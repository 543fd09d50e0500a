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
- with ``--save MODEL.skops``: the first decoder refitted on every network, with what ``virtual-lab identify``
  needs to ask it about a recording (:mod:`virtual_lab.analysis.saved_model`);
- unless ``--no-behaviour``: what the recording adds over behaviour (learning curves alone, observables
  alone, both, and both within performance-matched networks; :mod:`virtual_lab.analysis.behaviour`),
  printed and in ``summary.json`` under ``beyond_behaviour``.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass
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
               "--features paper --features paper+ratio\n"
               "  virtual-lab decode recordings/quickstart --rig 2p-gcamp6s --save model.skops   # for identify",
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
    _add_run_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Seeds, processes, the observable cache, bad inputs, output and ``--save``."""
    parser.add_argument("--n-permutations", type=int, default=100, help="for --control permutation (default 100)")
    parser.add_argument("--cluster-method", default="kmeans", choices=("kmeans", "gmm"))
    parser.add_argument("--seed", type=int, default=0, help="seed of splits, decoders, shuffles (default 0)")
    parser.add_argument("--rig-seed", type=int, default=0, help="seed of the rig presets (default 0)")
    parser.add_argument("--jobs", type=int, default=None, help="parallel processes (default: all cores)")
    parser.add_argument("--no-cache", action="store_true",
                        help="compute every session's observables and every cross-validation anew and store none "
                             "(default: read and write the cache in RECORDINGS/.cache/observables, keyed by each "
                             "session's content hash, rig, rig seed, observables and code version, and the "
                             "cross-validated results in its evaluations/ folder, keyed by the feature table's "
                             "content and the decoder settings)")
    parser.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                        help="folder of the observable cache (default RECORDINGS/.cache/observables)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first input file that is not a complete, readable session (default: "
                             "skip it with a warning, list it in summary.json and exit with status 1)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress")
    parser.add_argument("--output-dir", type=Path, default=None, help="where to write (default RECORDINGS/decode)")
    parser.add_argument("--save", type=Path, default=None, metavar="MODEL.skops",
                        help="store the first decoder (first rig and feature set) fitted on every network, with its "
                             "observables, rig, population, cross-validated confusion and an out-of-distribution "
                             "threshold, for 'virtual-lab identify' (skops format)")


def _controls(requested: list[str]) -> list[str]:
    from virtual_lab.analysis.controls import CONTROLS
    from virtual_lab.validation import check_choice as _check_choice

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


@dataclass
class _Settings:
    """The checked command line: what to decode, how, and where to write."""

    decoders: list[str]
    feature_sets: list[str]
    holdouts: list[str]
    filtered: bool
    controls: list[str]
    rigs: list[str]
    n_jobs: int
    output: Path


def _check_arguments(args: argparse.Namespace) -> _Settings:
    """Every check of the command line, before any session is read (one ``ValueError`` line each)."""
    from virtual_lab.analysis.decoders import make_decoder
    from virtual_lab.analysis.feature_variants import feature_set_names
    from virtual_lab.validation import check_choice

    decoders = list(dict.fromkeys(args.decoder or ["random_forest"]))
    for name in decoders:
        make_decoder(name)  # did-you-mean on typos, before any work
    feature_sets = list(dict.fromkeys(args.features or ["paper"]))
    for name in feature_sets:
        check_choice("features", name, feature_set_names())
    holdouts = list(dict.fromkeys(args.holdout or []))
    filtered = args.train_filter is not None or args.test_filter is not None
    if holdouts and filtered:
        raise ValueError("--holdout and --train-filter/--test-filter both choose the test side; use one of them")
    if args.holdout_bins is not None and (not holdouts or args.holdout_bins < 2):
        raise ValueError("--holdout-bins needs --holdout and at least 2 bins")
    controls = _controls(args.control)
    rigs = list(dict.fromkeys(args.rig or ["full"]))
    if args.save is not None:
        from virtual_lab.analysis.saved_model import check_savable

        check_savable(decoders[0], filtered, args.save)
    if "rig" in holdouts and len(rigs) < 2:
        raise ValueError("--holdout rig trains on one rig preset's observations and tests on another's: give at "
                         "least two --rig")
    for flag, value in (("--n-splits", args.n_splits), ("--n-permutations", args.n_permutations)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if not 0 < args.test_fraction < 1:
        raise ValueError(f"--test-fraction must lie strictly between 0 and 1, got {args.test_fraction}")
    if args.no_cache and args.cache_dir is not None:
        raise ValueError("--no-cache and --cache-dir contradict each other: give one of them")
    first = args.recordings[0]
    output = args.output_dir or (first if first.is_dir() else first.parent) / "decode"
    return _Settings(decoders, feature_sets, holdouts, filtered, controls, rigs,
                     n_jobs=args.jobs or max(1, os.cpu_count() or 1), output=output)


class _Collector:
    """The analyses of one ``decode`` and the tidy rows of ``decode.csv``."""

    def __init__(self, meta_by_network: dict[str, dict], features: str):
        self.meta_by_network, self.features = meta_by_network, features
        self.analyses: list[dict] = []
        self.rows: list[dict] = []

    def record(self, analysis: str, rig: str, decoder: str, control: str, target: str, result: Any,
               features: str | None = None) -> None:
        from virtual_lab.analysis.permutation import PermutationResult

        features = features or self.features
        self.analyses.append({"analysis": analysis, "rig": rig, "decoder": decoder, "features": features,
                              "control": control, "target": target, "result": result, "summary": result.summary()})
        if not isinstance(result, PermutationResult):
            self.rows.extend(_rows(analysis, rig, decoder, control, target, result, self.meta_by_network, features))


def run(args: argparse.Namespace) -> int:
    """Entry point of ``virtual-lab decode``."""
    from virtual_lab.analysis.feature_variants import feature_set
    from virtual_lab.analysis.observable_cache import default_cache_dir
    from virtual_lab.analysis.result_cache import cached_evaluations
    from virtual_lab.analysis.session_tables import rig_observables, tables_from_sessions
    from virtual_lab.commands.decode_output import holdouts, print_results, write_outputs
    from virtual_lab.sessions import find_sessions

    started = time.perf_counter()
    settings = _check_arguments(args)
    settings.output.mkdir(parents=True, exist_ok=True)
    observables, named = _observables(args.observables)
    found = find_sessions([str(p) for p in args.recordings], kind="any", strict=args.strict)  # bad files: warned
    paths = [str(p) for p in sorted(found.complete)]
    skipped = list(found.bad)  # and the sessions that fail to read below: listed, exit status 1
    chosen = rig_observables(paths, settings.rigs, observables, explicit=named, seed=args.rig_seed)
    for _, note in chosen.values():
        if note:
            print(note)  # e.g. "rig 2p-gcamp6s measures activity only: using its 8 activity observables ..."
    settings.controls = _measured_controls(settings.controls, set(args.control) - {"all"}, settings.rigs[0],
                                           chosen[settings.rigs[0]][0])
    cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir(args.recordings[0]))
    cache_stats: dict = {}
    tables, curves = tables_from_sessions(paths, settings.rigs, {rig: kept for rig, (kept, _) in chosen.items()},
                                          seed=args.rig_seed, n_jobs=settings.n_jobs, strict=args.strict,
                                          skipped=skipped, cache_dir=cache_dir, cache_stats=cache_stats)
    t_features = time.perf_counter() - started
    kwargs = dict(n_splits=args.n_splits, test_fraction=args.test_fraction, seed=args.seed, n_jobs=settings.n_jobs,
                  param_grid=args.grid)
    views = {name: {rig: feature_set(table, name) for rig, table in tables.items()} for name in settings.feature_sets}
    collector = _Collector({str(nid): dict(meta) for t in tables.values() for nid, meta in zip(t.network_id, t.metadata)},
                           settings.feature_sets[0])
    # cross-validated results are cached next to the observables (same switch), keyed by table content
    with cached_evaluations(None if cache_dir is None else cache_dir / "evaluations"):
        main_results = _decode(args, settings, views, curves, kwargs, collector)
        if args.save is not None:
            _save(args, settings, views, main_results, paths)
        holdout_summaries = holdouts(args, settings.holdouts, settings.rigs, settings.feature_sets, views, curves,
                                     settings.decoders, main_results, kwargs, collector.record, settings.output)
        extras = _behaviour_and_controls(args, settings, tables, views, curves, main_results, kwargs, collector)
    elapsed = time.perf_counter() - started
    summary = {
        "recordings": [str(p) for p in args.recordings], "rigs": settings.rigs, "decoders": settings.decoders,
        "controls": settings.controls, "train_filter": args.train_filter, "test_filter": args.test_filter,
        "holdout": settings.holdouts, "holdout_bins": args.holdout_bins, "features": settings.feature_sets,
        "grid": args.grid, "n_splits": args.n_splits, "test_fraction": args.test_fraction, "seed": args.seed,
        "rig_seed": args.rig_seed, "n_networks": {rig: int(len(set(t.network_id.tolist()))) for rig, t in tables.items()},
        "analyses": [{k: v for k, v in a.items() if k != "result"} for a in collector.analyses], **extras,
        **({"holdout_results": holdout_summaries} if settings.holdouts else {}),
        "skipped": [{"path": str(f.path), "kind": f.kind, "reason": f.reason} for f in skipped],
        "timings_s": {"features": t_features, "total": elapsed},
        "observable_cache": {"dir": None if cache_dir is None else str(cache_dir), **cache_stats},
    }
    write_outputs(settings.output, collector.rows, summary, collector.analyses, TABLE_COLUMNS)
    return print_results(collector.analyses, extras, len(collector.rows), settings.output, elapsed, t_features,
                         skipped)


def _decode(args: argparse.Namespace, settings: _Settings, views: dict[str, dict[str, Any]], curves: dict[str, list],
            kwargs: dict[str, Any], collector: _Collector) -> dict[tuple[str, str, str], Any]:
    """The main analyses (or, with filters, the train/test generalization); returns the main results by (rig,
    features, decoder)."""
    import dataclasses

    from virtual_lab.analysis.controls import performance_table
    from virtual_lab.analysis.evaluation import evaluate
    from virtual_lab.analysis.generalization import generalize
    from virtual_lab.analysis.session_tables import align_tables
    from virtual_lab.analysis.tables import concat_tables

    main_results: dict[tuple[str, str, str], Any] = {}
    across_rigs = settings.filtered and len(settings.rigs) > 1
    for rig in ([] if across_rigs else views[settings.feature_sets[0]]):
        for features in settings.feature_sets:
            for decoder in settings.decoders:
                table = views[features][rig]
                if settings.filtered:
                    result = generalize(table, args.train_filter, args.test_filter, decoder, **kwargs)
                    collector.record("generalization", rig, decoder, "", "rule", result, features)
                else:
                    main_results[(rig, features, decoder)] = evaluate(table, decoder, **kwargs)
                    collector.record("main", rig, decoder, "", "rule", main_results[(rig, features, decoder)], features)
        if settings.filtered and not args.no_behaviour:  # the same test on the learning curves alone
            for decoder in settings.decoders:
                try:
                    result = generalize(performance_table(curves[rig]), args.train_filter, args.test_filter, decoder,
                                        **kwargs)
                except ValueError as error:
                    print(f"learning curves alone under the same filters: skipped ({error})")
                    break
                collector.record("generalization", rig, decoder, "learning curves alone", "rule", result, "curves")
    if across_rigs:
        for features in settings.feature_sets:
            aligned, note = align_tables(views[features])
            combined = concat_tables(list(aligned.values()))
            for decoder in settings.decoders:
                result = generalize(combined, args.train_filter, args.test_filter, decoder, **kwargs)
                if note:
                    result = dataclasses.replace(result, notes=result.notes + (note,))
                collector.record("generalization", "+".join(settings.rigs), decoder, "", "rule", result, features)
    return main_results


def _save(args: argparse.Namespace, settings: _Settings, views: dict[str, dict[str, Any]],
          main_results: dict[tuple[str, str, str], Any], paths: list[str]) -> None:
    """``--save``: the main analysis's first decoder, refitted on every network."""
    from virtual_lab.analysis.saved_model import save_decoder

    rig, features, decoder = settings.rigs[0], settings.feature_sets[0], settings.decoders[0]
    saved, _ = save_decoder(args.save, views[features][rig], decoder, main_results[(rig, features, decoder)],
                            rig=rig, rig_seed=args.rig_seed, session=paths[0], features=features, seed=args.seed,
                            n_splits=args.n_splits, test_fraction=args.test_fraction, param_grid=args.grid,
                            recordings=[str(p) for p in args.recordings])
    print(f"saved the {decoder} decoder (rig {rig}, features {features}, "
          f"{saved.metadata['population']['n_networks']} networks; out-of-distribution threshold "
          f"{saved.ood.threshold:.2f}) to {args.save}")


def _behaviour_and_controls(args: argparse.Namespace, settings: _Settings, tables: dict[str, Any],
                            views: dict[str, dict[str, Any]], curves: dict[str, list],
                            main_results: dict[tuple[str, str, str], Any], kwargs: dict[str, Any],
                            collector: _Collector) -> dict[str, Any]:
    """What the recording adds over behaviour, then the requested controls (clustering per rig) on the first rig
    with the first decoder; returns the summary's extra entries."""
    from virtual_lab.analysis.behaviour import beyond_behaviour
    from virtual_lab.analysis.clustering import cluster_runs, plot_embedding
    from virtual_lab.analysis.controls import run_control

    extras: dict[str, Any] = {}
    first_rig = next(iter(tables))
    first_table = views[settings.feature_sets[0]][first_rig]
    if not settings.filtered and not args.no_behaviour:
        extras["beyond_behaviour"] = [
            beyond_behaviour(first_table, curves[first_rig], decoder, rig=first_rig,
                             observables_result=main_results[(first_rig, settings.feature_sets[0], decoder)],
                             **kwargs).summary()
            for decoder in settings.decoders]
    decoder = settings.decoders[0]
    for name in settings.controls:
        if name == CLUSTER_CONTROL:
            for rig in tables:
                clustering = cluster_runs(views[settings.feature_sets[0]][rig], method=args.cluster_method,
                                          seed=args.seed)
                extras.setdefault("clustering", {})[rig] = clustering.summary()
                plot_embedding(clustering, settings.output / f"embedding_{rig}.png")
            continue
        for label, result in run_control(name, first_table, decoder, recordings=curves[first_rig],
                                         n_permutations=args.n_permutations, **kwargs):
            collector.record("control", first_rig, decoder, label, "family" if name == "family" else "rule", result)
    return extras


