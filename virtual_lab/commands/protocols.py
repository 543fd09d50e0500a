"""``virtual-lab protocols [NAME]``: the bundled protocols with their descriptions, or one protocol's file."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from virtual_lab.protocol import PROTOCOL_DIR, protocol_file, available_protocols, load_protocol

    if args.name:
        print(protocol_file(args.name).read_text(encoding="utf-8"), end="")
        return 0
    names = available_protocols()
    example = "quickstart" if "quickstart" in names else names[0]
    width = max(len(name) for name in names)
    for name in names:
        print(f"{name:<{width}}  {load_protocol(name).description}")
    print(f"\n{len(names)} bundled protocols in {PROTOCOL_DIR}\n"
          f"run one: virtual-lab run {example}; copy one to edit it: virtual-lab protocols {example} > mine.toml")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``protocols`` subcommand."""
    parser = subparsers.add_parser(
        "protocols", help="list the bundled protocols, or print one",
        description="List the protocols that come with virtual_lab, one line each: its name (what "
                    "'virtual-lab run NAME' takes) and its description. With a NAME, print that protocol's "
                    "file (every parameter commented) to copy and edit.",
        epilog="example:\n  virtual-lab protocols\n  virtual-lab protocols quickstart > my_study.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", default=None, help="a bundled protocol to print (default: list them all)")
    parser.set_defaults(func=_run)
    return parser
