"""Errors that reach a user: the CLI prints their message (no traceback) and exits non-zero."""


class FedrecError(Exception):
    """A problem the user can fix: bad input, a missing or corrupt file, a refused action.

    The message must name the file/field and say what was wrong.
    """
