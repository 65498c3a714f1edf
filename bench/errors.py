"""Errors the CLI reports to the user as one line (exit code 2) instead of a traceback."""


class UserError(Exception):
    """A mistake in the user's input or environment: unknown name, missing data, bad value.

    The CLI prints ``error: <message>`` and exits with code 2. Messages are one line and say
    what was wrong and what would be right.
    """
