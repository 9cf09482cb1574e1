"""The one way every command-line entry point reports a user error: one line on stderr, a non-zero exit."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import NoReturn

MainFunction = Callable[[list[str] | None], int]


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, with a bad flag reported in one line (a pod's log shows it, not a usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (--help lists the flags)\n")


def user_errors(program: str) -> Callable[[MainFunction], MainFunction]:
    """Wrap a ``main(argv)`` so a ValueError or OSError prints ``program: error: ...`` and returns 2."""

    def decorate(main: MainFunction) -> MainFunction:
        @functools.wraps(main)
        def wrapper(argv: list[str] | None = None) -> int:
            try:
                return main(argv)
            except (ValueError, OSError) as error:
                print(f"{program}: error: {error}", file=sys.stderr)
                return 2
            except KeyboardInterrupt:
                print(f"{program}: interrupted", file=sys.stderr)
                return 130

        return wrapper

    return decorate
