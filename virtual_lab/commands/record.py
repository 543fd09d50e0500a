"""``virtual-lab record``: observe ground-truth sessions through a rig preset and export them as NWB."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _parse_value(text: str):
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def _session_files(paths: list[Path]) -> list[Path]:
    """Complete ground-truth sessions under ``paths``; each damaged or foreign file named on stderr and skipped."""
    from virtual_lab.sessions import find_sessions

    found = find_sessions(paths, kind="groundtruth")
    for skipped in found.skipped:
        print(f"skipped {skipped.path}: {skipped.kind}: {skipped.reason}", file=sys.stderr)
    return list(found.complete)


def _run(args: argparse.Namespace) -> int:
    from virtual_lab.rig.export import record_sessions
    from virtual_lab.rig.presets import load_preset

    preset = load_preset(args.rig)
    overrides = {}
    for item in args.set or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. noise_sd=0.3 or calcium.noise_level=4")
        key, value = item.split("=", 1)
        overrides[key.strip()] = _parse_value(value.strip())
    if overrides:
        preset = preset.with_params(overrides)
    files = _session_files(args.sessions)
    out = args.out if args.out is not None else Path("recordings") / "rigs" / preset.name
    t0 = time.perf_counter()
    written, key = record_sessions(files, preset, out, seed=args.seed, blind=args.blind, key_path=args.key)
    print(f"observed {len(written)} session(s) through rig {preset.name!r} in {time.perf_counter() - t0:.1f} s "
          f"-> {out}" + (f"; blind key: {key}" if key else ""))
    return 0


def add_parser(subparsers) -> None:
    """Add the ``record`` subcommand."""
    from virtual_lab.rig.presets import available_presets

    parser = subparsers.add_parser(
        "record", help="observe sessions through a rig preset and export NWB recordings",
        description=("Observe ground-truth sessions through a virtual rig preset (subsampling, spiking, calcium "
                     "imaging, tracking, synapse measurement, noise) and write each observed recording as NWB in "
                     "its modality's standard types. Presets: " + ", ".join(available_presets()) + "."),
        epilog=("example:\n  virtual-lab record recordings/quickstart --rig 2p-gcamp6s --out /tmp/2p\n"
                "  virtual-lab record recordings/quickstart --rig neuropixels-chronic --blind --set n_checkpoints=3"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sessions", nargs="+", type=Path, metavar="SESSIONS",
                        help="ground-truth session files or folders (searched for *_ses-groundtruth.nwb)")
    parser.add_argument("--rig", required=True, metavar="PRESET",
                        help="preset name (in protocols/rigs) or path to a preset TOML file")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: recordings/rigs/PRESET)")
    parser.add_argument("--blind", action="store_true",
                        help="opaque subject ids and no rule anywhere in the files; the key goes to a separate file")
    parser.add_argument("--key", type=Path, default=None,
                        help="where to write the blind key (default: OUT-blind-key.json next to OUT)")
    parser.add_argument("--seed", type=int, default=0, help="rig seed (default 0)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a preset parameter (noise_sd, n_units, n_checkpoints, ... or stage.key)")
    parser.set_defaults(func=_run)
