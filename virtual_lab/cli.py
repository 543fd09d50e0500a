"""The ``virtual-lab`` command: thin wrappers over library functions.

Every subcommand's ``--help`` ends with an example. Errors in user input end with one line on stderr and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from virtual_lab import __version__
from virtual_lab.commands import EXIT_FAILURE, EXIT_USAGE, configure_logging, run_parsed


def _cmd_run(args: argparse.Namespace) -> int:
    from virtual_lab.pipeline import run_protocol
    from virtual_lab.protocol import load_protocol

    protocol = load_protocol(args.protocol)
    if args.output_dir is not None:
        import dataclasses

        protocol = dataclasses.replace(protocol, output_dir=str(args.output_dir))
    from virtual_lab.commands.check import validate_run

    plan = validate_run(protocol, train_only=args.train_only, n_workers=args.workers, executor=args.executor,
                        scheduler=args.scheduler)  # every check before any training
    if args.dry_run:
        print(plan.text())
        return 0
    result = run_protocol(protocol, progress=not args.quiet, n_threads=args.threads, executor=args.executor,
                          scheduler=args.scheduler, n_workers=args.workers, train_only=args.train_only)
    print(result.summary_text())
    return 0 if result.ok else EXIT_FAILURE


def _cmd_inspect(args: argparse.Namespace) -> int:
    from virtual_lab.sessions import inspect_sessions

    messages = inspect_sessions(args.path, config="dandi")
    serious = [m for m in messages if m.importance.name in ("CRITICAL", "BEST_PRACTICE_VIOLATION", "ERROR")]
    for message in messages:
        print(f"{message.importance.name}: {message.file_path}: {message.check_function_name}: "
              f"{_one_line(str(message.message))}")
    print(f"{len(messages)} message(s), {len(serious)} critical or best-practice violation(s)")
    unreadable = sorted({str(m.file_path) for m in messages if m.importance.name == "ERROR"})
    if unreadable:
        print(f"{len(unreadable)} file(s) could not be read or checked completely (ERROR above): "
              + ", ".join(unreadable))
    return EXIT_FAILURE if serious else 0


def _one_line(text: str) -> str:
    """An nwbinspector message on one line: a traceback it carries is cut to its last line (the error)."""
    head, marker, trace = text.partition("Traceback (most recent call last):")
    lines = [line.strip() for line in (trace or text).splitlines() if line.strip()]
    if not marker:
        return " ".join(lines)
    head, last = head.strip().rstrip(":"), lines[-1] if lines else ""
    return f"{head}: {last}" if head else last


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="virtual-lab",
        description="Simulated recording experiments: train networks under known learning rules, record them "
                    "as NWB sessions, observe them through a virtual rig and decode the rule.",
        epilog="example:\n  virtual-lab run protocols/quickstart.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"virtual-lab {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run", help="train, record, observe and decode everything a protocol describes",
        description="Train every network of a protocol's sweep (reusing complete sessions), write one NWB "
                    "session per run, observe the sessions through the protocol's rig settings, decode the "
                    "learning rule with grouped cross-validation and write a report.",
        epilog="example:\n  virtual-lab run protocols/quickstart.toml\n"
               "  virtual-lab run quickstart          (a bundled protocol by name: virtual-lab protocols)\n"
               "  virtual-lab run protocols/quickstart.toml --output-dir /tmp/recordings\n"
               "  virtual-lab run protocols/quickstart.toml --dry-run   (check it, print the plan, train nothing)\n"
               "  virtual-lab run protocols/quickstart.toml --executor dask --scheduler tcp://10.0.0.5:8786\n"
               "exit status: 0 when every run has a session and decoding ran, 1 when a run failed (see\n"
               "<recordings>/sweep_manifest.json), 2 for invalid input.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("protocol", type=Path,
                     help="protocol TOML file, or the name of a bundled protocol (list: virtual-lab protocols)")
    run.add_argument("--output-dir", type=Path, default=None,
                     help="override the protocol's output_dir (sessions go to OUTPUT_DIR/<protocol name>/)")
    run.add_argument("--threads", type=int, default=None,
                     help="torch threads for decoding (default: all cores; training uses one per worker)")
    run.add_argument("--executor", choices=("local", "dask"), default="local",
                     help="where training runs: local processes (default) or a Dask cluster")
    run.add_argument("--scheduler", default=None, metavar="ADDRESS",
                     help="Dask scheduler address, e.g. tcp://10.0.0.5:8786 (with --executor dask; without "
                          "it a local cluster is started on 127.0.0.1)")
    run.add_argument("--workers", type=int, default=None,
                     help="training processes (default: one per core; 0 = train in this process)")
    run.add_argument("--train-only", action="store_true", help="stop after training and recording the sessions")
    run.add_argument("--dry-run", action="store_true",
                     help="check the protocol and print the plan (runs, steps, time, disk), train nothing "
                          "(= virtual-lab check)")
    run.add_argument("-q", "--quiet", action="store_true",
                     help="no progress (default: a bar on a terminal, a line every ~10 s in a log file)")
    run.set_defaults(func=_cmd_run)

    inspect = sub.add_parser(
        "inspect", help="run nwbinspector over sessions",
        description="Check NWB sessions with nwbinspector (DANDI configuration).",
        epilog="example:\n  virtual-lab inspect recordings/quickstart",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    inspect.add_argument("path", type=Path, help="an NWB file or a folder of them")
    inspect.set_defaults(func=_cmd_inspect)

    import importlib

    from virtual_lab.commands import MODULES

    for name in MODULES:
        module_name = f"virtual_lab.commands.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:  # a real missing dependency inside the module
                raise
            continue  # subcommand not built yet
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``virtual-lab`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    return run_parsed(args)
