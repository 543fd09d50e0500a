"""``virtual-lab calibrate``: a rig preset measured from pilot NWB recordings (two-photon or spike-sorted)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _destination(args: argparse.Namespace) -> Path:
    """The preset file to write: ``--output``, or ``--output-dir/<name>.toml``, or ``./<name>.toml``."""
    if args.output is not None and args.output_dir is not None:
        raise ValueError("give either --output FILE or --output-dir FOLDER, not both")
    if args.output is not None:
        if args.output.suffix != ".toml":
            raise ValueError(f"--output must be a .toml file (a rig preset), got {str(args.output)!r}")
        return args.output
    return (args.output_dir or Path(".")) / f"{args.name or 'calibrated-rig'}.toml"


def _run(args: argparse.Namespace) -> int:
    from virtual_lab.rig.calibrate import calibrate, write_calibrated_preset
    from virtual_lab.rig.presets import load_preset
    from virtual_lab.sessions import session_candidates

    destination = _destination(args)
    if args.base is not None:
        load_preset(args.base)  # an unknown base preset is an error before any file is read
    files, temporary = session_candidates(args.pilots, kind="any")
    for path in temporary:
        print(f"skipped {path}: a temporary file (hidden name or .tmp)", file=sys.stderr)
    name = args.name or (args.output.stem if args.output is not None else "calibrated-rig")
    calibration = calibrate(files, base=args.base, modality=args.modality, id_column=args.id_column, name=name)
    for line in calibration.unusable:
        print(f"unusable {line}", file=sys.stderr)
    path = write_calibrated_preset(calibration, destination)
    if not args.quiet:
        for line in calibration.summary_lines():
            print(f"  {line}")
    print(f"calibrated rig {calibration.name!r} ({calibration.modality}, base {calibration.base}) from "
          f"{len(calibration.pilot_files)} pilot file(s)"
          + (f", {len(calibration.unusable)} unusable" if calibration.unusable else "") + f" -> {path}\n"
          f"use it: virtual-lab power RECORDINGS --rig {path} ...")
    return 0


def add_parser(subparsers) -> None:
    """Add the ``calibrate`` subcommand."""
    parser = subparsers.add_parser(
        "calibrate", help="write a rig preset measured from pilot NWB recordings",
        description="Read pilot recordings written by other tools (NWB: RoiResponseSeries under DfOverF or "
                    "Fluorescence with their PlaneSegmentation, or a units table with spike times; trials or "
                    "stimulus presentations when present), measure cells per session, number and spacing of "
                    "sessions, frame rate and CASCADE noise level (imaging) or firing rates and SNR (units), the "
                    "fraction of cells found again across sessions and the response reliability across repeated "
                    "stimuli, and write a rig preset: the modality preset's published numbers with every "
                    "measured value replaced, each value commented with where it came from (file, object, "
                    "method) and a [provenance] table. Files that cannot be used are named, one line each. "
                    "Sessions of one animal share subject.subject_id; cells are matched across sessions by the "
                    "ids of the PlaneSegmentation / units table (--id-column names another column, e.g. a CellReg "
                    "or UnitMatch id).",
        epilog="example:\n"
               "  virtual-lab calibrate pilot/ --id-column cellreg_id --output-dir rigs/\n"
               "  virtual-lab power recordings/quickstart --rig my-rig.toml --layers fc1,fc2 --units 10,30,100 \\\n"
               "      --noise-param calcium.noise_level --noise 1,2,4 --sessions 3,7 --rig-seeds 1\n"
               "  virtual-lab calibrate pilot/ses-1.nwb pilot/ses-2.nwb pilot/ses-3.nwb --output my-rig.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pilots", type=Path, nargs="+", metavar="PILOT",
                        help="pilot NWB files (one session each), or folders of them (searched recursively)")
    parser.add_argument("--output", type=Path, default=None, metavar="FILE",
                        help="preset file to write (.toml; default: OUTPUT_DIR/NAME.toml)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="folder for NAME.toml when --output is not given (default: the current folder)")
    parser.add_argument("--name", default=None,
                        help="preset name (default: the --output file's stem, else calibrated-rig)")
    parser.add_argument("--base", default=None, metavar="PRESET",
                        help="preset whose published numbers fill what cannot be measured (default: the 2p preset "
                             "of the files' indicator, else 2p-gcamp6s; neuropixels-chronic for units)")
    parser.add_argument("--modality", choices=("ophys", "ecephys"), default=None,
                        help="which data to calibrate from when files hold both")
    parser.add_argument("--id-column", default="id", metavar="COLUMN",
                        help="column identifying the same cell across sessions (default: the table ids)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the result line")
    parser.set_defaults(func=_run)
