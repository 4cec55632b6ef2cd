"""The one error type of every command-line entry point.

A command (``medret train``, ``index``, ``serve``, ``demo``, …) raises
:class:`CommandError` for an expected failure: bad input, a missing file, a refused
configuration. ``medret``'s ``main`` prints it as one line, ``medret COMMAND: reason``, and
exits with :data:`EXIT_BAD_INPUT`; no traceback reaches the person at the terminal.
"""

from __future__ import annotations

EXIT_BAD_INPUT = 2


class CommandError(Exception):
    """An expected failure of a command, reported as one line with exit status 2."""
