"""``virtual-lab protocols [NAME]``: the bundled protocols with their descriptions, or one protocol's file."""

from __future__ import annotations

import argparse

from virtual_lab.commands.bundled import add_bundled_parser, show_bundled


def _run(args: argparse.Namespace) -> int:
    from virtual_lab.protocol import PROTOCOL_DIR, protocol_file, available_protocols, load_protocol

    return show_bundled(
        args.name, list_names=available_protocols, file_of=protocol_file,
        describe=lambda name: load_protocol(name).description, example="quickstart",
        footer=lambda names, example: (
            f"\n{len(names)} bundled protocols in {PROTOCOL_DIR}\n"
            f"run one: virtual-lab run {example}; copy one to edit it: virtual-lab protocols {example} > mine.toml"))


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``protocols`` subcommand."""
    return add_bundled_parser(
        subparsers, "protocols", help="list the bundled protocols, or print one",
        description="List the protocols that come with virtual_lab, one line each: its name (what "
                    "'virtual-lab run NAME' takes) and its description. With a NAME, print that protocol's "
                    "file (every parameter commented) to copy and edit.",
        epilog="example:\n  virtual-lab protocols\n  virtual-lab protocols quickstart > my_study.toml",
        name_help="a bundled protocol to print (default: list them all)", run=_run)
