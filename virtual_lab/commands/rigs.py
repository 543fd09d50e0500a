"""``virtual-lab rigs [NAME]``: the bundled rig presets with their descriptions, or one preset's file."""

from __future__ import annotations

import argparse

from virtual_lab.commands.bundled import add_bundled_parser, show_bundled


def _run(args: argparse.Namespace) -> int:
    from virtual_lab.rig.presets import PRESET_DIR, preset_file, available_presets, load_preset

    return show_bundled(
        args.name, list_names=available_presets, file_of=preset_file,
        describe=lambda name: load_preset(name).description, example="2p-gcamp6s",
        footer=lambda names, example: (
            f"\n{len(names)} bundled rig presets in {PRESET_DIR}\n"
            f"use one: virtual-lab record SESSIONS --rig {example}, or preset = \"{example}\" in a protocol's "
            f"[[rig]]; copy one to edit it: virtual-lab rigs {example} > my_rig.toml"))


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``rigs`` subcommand."""
    return add_bundled_parser(
        subparsers, "rigs", help="list the bundled rig presets, or print one",
        description="List the rig presets that come with virtual_lab (modalities: Gaussian obfuscation as in the "
                    "paper, Neuropixels, two-photon calcium imaging, EM, spine imaging), one line each: its name "
                    "(what --rig and a protocol's [[rig]] preset take) and its description. With a NAME, print "
                    "that preset's file (every parameter with its unit and source) to copy and edit.",
        epilog="example:\n  virtual-lab rigs\n  virtual-lab rigs 2p-gcamp6s > my_rig.toml",
        name_help="a bundled preset to print (default: list them all)", run=_run)
