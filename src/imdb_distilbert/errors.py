"""Errors a user can cause, and how the command-line tools report them."""

import sys
from collections.abc import Callable


class UserError(Exception):
    """Something the user can fix (a path, a column, a flag). The message says what and how."""

    def _render_traceback_(self) -> list[str]:
        """What IPython and Jupyter show for it (their hook for custom tracebacks): the one line run_cli prints."""
        return [f"error: {self}"]


def run_cli(main: Callable[[], object]) -> None:
    """Run `main()`; report a UserError or Ctrl-C in one line and exit non-zero, no traceback."""
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as interrupt:  # a message, if given, says what was kept
        print(f"interrupted: {str(interrupt) or 'nothing was saved for this run.'}", file=sys.stderr)
        sys.exit(130)
