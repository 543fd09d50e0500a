"""``virtual-lab status RECORDINGS``: how far a sweep got, by learning rule and architecture; ``--verify``
rehashes every session against the checksum its sweep recorded."""

from __future__ import annotations

import argparse
from pathlib import Path

EXIT_INCOMPLETE = 1


def _run(args: argparse.Namespace) -> int:
    from virtual_lab.sweeps.status import sweep_status

    status = sweep_status(args.recordings, verify=args.verify)
    print(status.summary_text())
    return 0 if status.ok else EXIT_INCOMPLETE


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``status`` subcommand."""
    parser = subparsers.add_parser(
        "status", help="summarize a recordings folder: complete / failed / missing runs",
        description="Count the runs of a sweep folder that are complete, diverged, failed or missing, by "
                    "learning rule and architecture (from the folder's sweep_manifest.json and a check of "
                    "every session file), and list files named .nwb that are not complete sessions "
                    "(truncated, foreign, not HDF5). With --verify, also rehash every session the manifest "
                    "records and compare it with the SHA-256 taken when it was committed: ok, changed (other "
                    "bytes, still reads), missing, or damaged (fails to open or read as a session). Exit status "
                    "0 when every planned run has a session, no file is damaged and (with --verify) every "
                    "session is ok, 1 otherwise.",
        epilog="example:\n  virtual-lab status recordings/quickstart\n"
               "  virtual-lab status recordings/quickstart --verify",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recordings", type=Path, help="a sweep's recordings folder (<output_dir>/<protocol name>)")
    parser.add_argument("--verify", action="store_true",
                        help="rehash every session and read it completely where its checksum differs or is not "
                             "recorded (reads every byte: slower)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress")
    parser.set_defaults(func=_run)
    return parser
