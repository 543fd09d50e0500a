"""Subcommands of ``virtual-lab`` beyond ``run`` and ``inspect``, one module each.

Each module defines ``add_parser(subparsers)`` that adds its subparser, sets ``func`` (a function taking the
parsed ``argparse.Namespace`` and returning an exit code) and gives an ``example:`` epilog. Modules import
heavy libraries inside ``func`` only, so ``virtual-lab --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys

#: Subcommand modules, in the order ``virtual-lab --help`` lists them.
MODULES = ("check", "record", "decode", "identify", "calibrate", "power", "status", "bench", "protocols", "rigs")

EXIT_USAGE = 2
EXIT_FAILURE = 1


def configure_logging(verbose: bool) -> None:
    """Log to stderr: INFO with ``--verbose``, else WARNING."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def run_parsed(args: argparse.Namespace) -> int:
    """Run a parsed subcommand (``args.func``) as the console script does.

    Progress is shown unless ``args.quiet``. Errors in user input end with one line on stderr, never a
    traceback: exit status 2 for a ``ValueError`` (``ProtocolError`` included), 1 for an ``OSError``, 130 on
    Ctrl-C.

    Parameters
    ----------
    args : argparse.Namespace
        With ``func``, the subcommand's function.

    Returns
    -------
    int
        The exit status.
    """
    from virtual_lab.progress import quiet

    try:
        with quiet(not getattr(args, "quiet", False)):
            return args.func(args)
    except KeyboardInterrupt:
        print("virtual-lab: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:  # ProtocolError is a ValueError
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"virtual-lab: error: {message}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, ValueError) else EXIT_FAILURE
