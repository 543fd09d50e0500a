"""``virtual-lab power``: how many neurons, at what noise, over how many sessions -- chosen on some networks,
confirmed on others -- and how often the verdict over M animals is right."""

from __future__ import annotations

import argparse
from pathlib import Path

from virtual_lab.commands import EXIT_FAILURE


def _ints(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _floats(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _run(args: argparse.Namespace) -> int:
    import logging
    import time

    from virtual_lab.analysis.power import power_analysis
    from virtual_lab.analysis.power_report import write_power_report

    rules = args.rules
    if args.pair is not None:
        if rules is not None:
            raise ValueError("give either --rules or --pair, not both")
        if len(args.pair) != 2:
            raise ValueError(f"--pair needs exactly two rules, got {','.join(args.pair)!r}")
        rules = args.pair
    started = time.perf_counter()
    sources, skipped = _inputs(args.recordings, args.strict)
    result = power_analysis(
        sources, units=args.units, noise=args.noise, sessions=args.sessions, rules=rules,
        target=args.target, n_splits=args.splits, rig=args.rig, rig_seeds=args.rig_seeds, decoder=args.decoder,
        seed=args.seed, cap_units=args.cap_units, layers=args.layers, observables=args.observables,
        n_jobs=args.jobs, progress=not args.quiet, noise_param=args.noise_param,
        confirm_fraction=args.confirm_fraction, holdout=args.holdout, holdout_bins=args.holdout_bins,
        pairs=not args.no_pairs, animals=args.animals)
    out = (args.output_dir if args.output_dir is not None
           else Path(args.recordings) / f"power-{result.provenance['rig']['name']}")
    for entry in result.provenance.get("unreadable_skipped", []):  # "path: error" of files failing mid-read
        path, _, reason = str(entry).partition(": ")
        skipped.append({"path": path, "kind": "corrupted", "reason": reason})
    result.provenance["skipped_inputs"] = skipped  # in power_summary.json
    paths = write_power_report(result, out)
    elapsed = time.perf_counter() - started
    for entry in result.skipped:
        print(f"skipped {entry['parameter']}={entry['value']}: {entry['reason']}")
    print(result.answer_text())
    print(f"\n{len(result.rows)} rows -> {paths['table']}; report: {paths['html']} and {paths['markdown'].name} "
          f"({elapsed:.0f} s)")
    logging.getLogger(__name__).info("power analysis took %.1f s", elapsed)
    if skipped:
        print(f"skipped {len(skipped)} input file(s) that are not complete, readable sessions "
              f"(in {paths['summary'].name}):")
        for entry in skipped:
            print(f"  {entry['kind']:<10} {entry['path']}: {entry['reason']}")
        return EXIT_FAILURE
    return 0


def _inputs(recordings: Path, strict: bool) -> tuple[list[Path], list[dict]]:
    """The complete sessions under ``recordings`` and the files skipped; with ``strict`` every session is read
    completely first and the first bad file is an error."""
    from virtual_lab.sessions import SessionReadError, check_session_data, find_sessions

    found = find_sessions(recordings, strict=strict)
    if strict:
        for path in found.complete:
            problem = check_session_data(path)
            if problem:
                raise SessionReadError(f"{path}: {problem}")
    return list(found.complete), [{"path": str(f.path), "kind": f.kind, "reason": f.reason} for f in found.bad]


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "power", help="how many neurons, at what noise, over how many sessions, to identify the rule",
        description="Simulate the experiment over a grid of recording protocols: observe every session through "
                    "the rig at each (units per layer, noise, sessions) point with several rig seeds, decode the "
                    "learning rule with grouped cross-validation on a selection part of the networks, choose the "
                    "smallest protocol reaching the target there, and confirm it on the other networks (which "
                    "took no part in the choice). Prints the confirmed accuracy with its interval, the accuracy "
                    "on a held-out condition (--holdout), the smallest protocol for each pair of rules, and the "
                    "probability that the verdict over M recorded animals is right. Grid values the recordings "
                    "cannot support are skipped with a message.",
        epilog="example:\n"
               "  virtual-lab power recordings/quickstart --rig paper --units 5,10,30,60,120 --cap-units \\\n"
               "      --noise 0,0.5,1,2,4 --sessions 3,7,21 --target 0.9 --output-dir /tmp/power\n"
               "  virtual-lab power recordings/quickstart --rig paper --units 5,10,30,60,120 --cap-units \\\n"
               "      --noise 0,0.5,1,2,4 --sessions 3,7,21 --holdout learning_rate_scale\n"
               "  virtual-lab power recordings/quickstart --units 10,100 --layers fc1,fc2 --noise 0,1 "
               "--sessions 5,21 --pair fa,ia\n"
               "  virtual-lab power recordings/quickstart --rig 2p-gcamp6s --layers fc1,fc2 --units 10,30,100 \\\n"
               "      --noise-param calcium.noise_level --noise 1,2,4,8 --sessions 3,7 --rig-seeds 1\n\n"
               "Modality presets (spiking, sorting, tracking, calcium, EM, spines) apply the preset itself at every\n"
               "grid point: slower than the paper rig, so start with a small grid.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recordings", type=Path, help="folder of ground-truth NWB sessions (searched recursively)")
    parser.add_argument("--rig", default="paper", help="rig preset (default: paper; an unknown name lists them)")
    parser.add_argument("--units", type=_ints, required=True, help="units recorded per layer, e.g. 10,30,100")
    parser.add_argument("--noise", type=_floats, required=True,
                        help="noise SD levels, e.g. 0,0.5,1,2 (or values of --noise-param)")
    parser.add_argument("--noise-param", default=None, metavar="STAGE.KEY",
                        help="preset parameter the noise axis sets, e.g. calcium.noise_level (default: noise.sd, "
                             "extra Gaussian noise in units of each measure's SD; rig presets of protocols/rigs)")
    parser.add_argument("--sessions", type=_ints, required=True,
                        help="sessions (checkpoints observed, evenly spaced), e.g. 3,5,10,21")
    parser.add_argument("--rules", type=_names, default=None, help="rules to tell apart (default: all recorded)")
    parser.add_argument("--pair", type=_names, default=None, help="pairwise mode: two rules, e.g. fa,ia")
    parser.add_argument("--target", type=float, default=0.9, help="target accuracy (default: 0.9)")
    parser.add_argument("--splits", type=int, default=10, help="grouped splits per grid point (default: 10)")
    parser.add_argument("--rig-seeds", type=int, default=2, help="rig repeats per grid point (default: 2)")
    parser.add_argument("--decoder", default="linear_svm",
                        help="linear_svm (default: fast enough for large grids), random_forest or logistic")
    parser.add_argument("--seed", type=int, default=0, help="master seed (default: 0)")
    parser.add_argument("--cap-units", action="store_true",
                        help="layers smaller than a units value record all their units (default: skip the value)")
    parser.add_argument("--layers", type=_names, default=None, help="layers recorded (default: all)")
    parser.add_argument("--observables", default="admissible", choices=["admissible", "all"])
    parser.add_argument("--confirm-fraction", type=float, default=0.5, metavar="F",
                        help="fraction of each rule's networks kept out of the choice to confirm it (default: 0.5)")
    parser.add_argument("--holdout", default=None, metavar="AXIS",
                        help="also answer for a condition not simulated: leave each level of AXIS out of training "
                             "in turn (learning_rate_scale, learning_rate, width, depth, task, architecture, or "
                             "any metadata key); the selection/confirmation split is then stratified by level too, "
                             "so the selection networks (and the recommendation) can differ from a run without it")
    parser.add_argument("--holdout-bins", type=int, default=None, metavar="N",
                        help="bins of a continuous --holdout axis (default: its values, or 8 bins above 12)")
    parser.add_argument("--no-pairs", action="store_true",
                        help="skip the pairwise table (one binary grid per pair of rules)")
    parser.add_argument("--animals", type=_ints, default=[1, 2, 3, 5, 10], metavar="M,...",
                        help="numbers of recorded animals of the verdict table (default: 1,2,3,5,10)")
    parser.add_argument("--jobs", type=int, default=-1, help="worker processes (default: all cores)")
    parser.add_argument("--output-dir", "--out", dest="output_dir", type=Path, default=None,
                        help="output folder (default: RECORDINGS/power-<rig>; --out is an alias)")
    parser.add_argument("--strict", action="store_true",
                        help="read every session completely before starting and stop at the first one that is not "
                             "a complete, readable session (default: skip it with a warning, list it in "
                             "power_summary.json and exit with status 1)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run)
