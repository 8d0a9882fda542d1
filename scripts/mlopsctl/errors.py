"""Errors that end a command with a clear message instead of a traceback."""


class MlopsctlError(Exception):
    """A problem the user can act on; the message names what is wrong and where."""

    exit_code = 2
