"""``virtual-lab rigs [NAME]``: the bundled rig presets with their descriptions, or one preset's file."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from virtual_lab.rig.presets import PRESET_DIR, preset_file, available_presets, load_preset

    if args.name:
        print(preset_file(args.name).read_text(encoding="utf-8"), end="")
        return 0
    names = available_presets()
    example = "2p-gcamp6s" if "2p-gcamp6s" in names else names[0]
    width = max(len(name) for name in names)
    for name in names:
        print(f"{name:<{width}}  {load_preset(name).description}")
    print(f"\n{len(names)} bundled rig presets in {PRESET_DIR}\n"
          f"use one: virtual-lab record SESSIONS --rig {example}, or preset = \"{example}\" in a protocol's "
          f"[[rig]]; copy one to edit it: virtual-lab rigs {example} > my_rig.toml")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``rigs`` subcommand."""
    parser = subparsers.add_parser(
        "rigs", help="list the bundled rig presets, or print one",
        description="List the rig presets that come with virtual_lab (modalities: Gaussian obfuscation as in the "
                    "paper, Neuropixels, two-photon calcium imaging, EM, spine imaging), one line each: its name "
                    "(what --rig and a protocol's [[rig]] preset take) and its description. With a NAME, print "
                    "that preset's file (every parameter with its unit and source) to copy and edit.",
        epilog="example:\n  virtual-lab rigs\n  virtual-lab rigs 2p-gcamp6s > my_rig.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", default=None, help="a bundled preset to print (default: list them all)")
    parser.set_defaults(func=_run)
    return parser
