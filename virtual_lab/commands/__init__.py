"""Subcommands of ``virtual-lab`` beyond ``run`` and ``inspect``, one module each.

Each module defines ``add_parser(subparsers)`` that adds its subparser, sets ``func`` (a function taking the
parsed ``argparse.Namespace`` and returning an exit code) and gives an ``example:`` epilog. Modules import
heavy libraries inside ``func`` only, so ``virtual-lab --help`` stays fast.
"""

#: Subcommand modules, in the order ``virtual-lab --help`` lists them.
MODULES = ("record", "decode", "power", "status", "bench")
