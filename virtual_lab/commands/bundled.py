"""What ``virtual-lab protocols`` and ``virtual-lab rigs`` share: list the files bundled with the package, one
line each with its description, or print one of them to copy and edit."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Sequence


def show_bundled(name: str | None, *, list_names: Callable[[], Sequence[str]], file_of: Callable[[str], Path],
                 describe: Callable[[str], str], example: str, footer: Callable[[Sequence[str], str], str]) -> int:
    """Print the bundled file ``name`` as it is, or (no name) every bundled name with its description.

    Parameters
    ----------
    name : str or None
        A bundled name (``file_of`` raises the usage error of an unknown one), or None to list them all.
    list_names : callable
        The bundled names, in listing order.
    file_of : callable
        The file of a name.
    describe : callable
        The one-line description of a name.
    example : str
        The name the footer uses as its example, when bundled (else the first name).
    footer : callable
        ``footer(names, example)``: the text printed after the list (how many, where, how to use one).

    Returns
    -------
    int
        0.
    """
    if name:
        print(file_of(name).read_text(encoding="utf-8"), end="")
        return 0
    names = list_names()
    example = example if example in names else names[0]
    width = max(len(n) for n in names)
    for n in names:
        print(f"{n:<{width}}  {describe(n)}")
    print(footer(names, example))
    return 0


def add_bundled_parser(subparsers: argparse._SubParsersAction, command: str, *, help: str, description: str,
                       epilog: str, name_help: str,
                       run: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """Add a listing subcommand taking one optional ``name`` (the bundled file to print)."""
    parser = subparsers.add_parser(command, help=help, description=description, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", default=None, help=name_help)
    parser.set_defaults(func=run)
    return parser
