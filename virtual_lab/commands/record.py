"""``virtual-lab record``: observe ground-truth sessions through a rig preset and export them as NWB."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from virtual_lab.commands import EXIT_FAILURE


def _session_files(paths: list[Path], strict: bool = False) -> tuple[list[Path], list[dict]]:
    """Complete ground-truth sessions under ``paths`` and the damaged or foreign files skipped (each named on
    stderr; with ``strict`` the first one is an error)."""
    from virtual_lab.sessions import TEMPORARY, find_sessions

    found = find_sessions(paths, kind="groundtruth", strict=strict)
    for skipped in found.skipped:
        print(f"skipped {skipped.path}: {skipped.kind}: {skipped.reason}", file=sys.stderr)
    return list(found.complete), [{"path": str(s.path), "kind": s.kind, "reason": s.reason}
                                  for s in found.skipped if s.kind != TEMPORARY]


def _write_summary(out: Path, written: list[Path], skipped: list[dict], args: argparse.Namespace, rig: str) -> Path:
    """``OUTPUT_DIR/summary.json``: every output with its SHA-256 and size, and the inputs skipped (their paths
    left out in blind mode: they name runs)."""
    import json
    import os

    from virtual_lab.sessions.checksum import file_checksum

    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "command": "record", "rig": rig, "seed": args.seed, "blind": bool(args.blind), "settings": args.set or [],
        "n_written": len(written), "n_skipped": len(skipped),
        "outputs": [{"path": path.relative_to(out).as_posix() if path.is_relative_to(out) else str(path),
                     **file_checksum(path)} for path in written],
        "skipped": [] if args.blind else skipped,
    }
    path = out / "summary.json"
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _run(args: argparse.Namespace) -> int:
    from virtual_lab.rig.export import record_sessions
    from virtual_lab.rig.presets import load_preset

    preset = load_preset(args.rig).with_settings(args.set or [])  # every --set checked before any file is read
    files, skipped = _session_files(args.sessions, strict=args.strict)
    out = args.output_dir if args.output_dir is not None else Path("recordings") / "rigs" / preset.name
    t0 = time.perf_counter()

    def unreadable(path: Path, error: OSError) -> None:  # a file damaged inside its arrays: skipped, named
        print(f"skipped {path}: corrupted: {error}", file=sys.stderr)
        skipped.append({"path": str(path), "kind": "corrupted", "reason": str(error)})

    written, key = record_sessions(files, preset, out, seed=args.seed, blind=args.blind, key_path=args.key,
                                   on_unreadable=None if args.strict else unreadable)
    summary = _write_summary(out, written, skipped, args, preset.name)
    print(f"observed {len(written)} session(s) through rig {preset.name!r} in {time.perf_counter() - t0:.1f} s "
          f"-> {out}" + (f"; blind key: {key}" if key else "") + f"; checksums in {summary}")
    if skipped:
        print(f"skipped {len(skipped)} input file(s) that are not complete, readable sessions:")
        for entry in skipped:
            print(f"  {entry['kind']:<10} {entry['path']}: {entry['reason']}")
        return EXIT_FAILURE
    return 0


def add_parser(subparsers) -> None:
    """Add the ``record`` subcommand."""
    from virtual_lab.rig.presets import available_presets

    parser = subparsers.add_parser(
        "record", help="observe sessions through a rig preset and export NWB recordings",
        description=("Observe ground-truth sessions through a virtual rig preset (subsampling, spiking, calcium "
                     "imaging, tracking, synapse measurement, noise) and write each observed recording as NWB in "
                     "its modality's standard types. Presets: " + ", ".join(available_presets()) + "."),
        epilog=("example:\n  virtual-lab record recordings/quickstart --rig 2p-gcamp6s --output-dir /tmp/2p\n"
                "  virtual-lab record recordings/quickstart --rig neuropixels-chronic --blind --set n_checkpoints=3"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sessions", nargs="+", type=Path, metavar="SESSIONS",
                        help="ground-truth session files or folders (searched for *_ses-groundtruth.nwb)")
    parser.add_argument("--rig", required=True, metavar="PRESET",
                        help="preset name (in protocols/rigs) or path to a preset TOML file")
    parser.add_argument("--output-dir", "--out", dest="output_dir", type=Path, default=None,
                        help="output folder (default: recordings/rigs/PRESET; --out is an alias)")
    parser.add_argument("--blind", action="store_true",
                        help="opaque subject ids and no rule anywhere in the files; the key goes to a separate file")
    parser.add_argument("--key", type=Path, default=None,
                        help="where to write the blind key (default: OUTPUT_DIR-blind-key.json next to OUTPUT_DIR)")
    parser.add_argument("--seed", type=int, default=0, help="rig seed (default 0)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first input file that is not a complete, readable session (default: "
                             "skip it with a warning, list it in the summary and exit with status 1)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a preset parameter (noise_sd, n_units, n_checkpoints, ... or stage.key)")
    parser.set_defaults(func=_run)
