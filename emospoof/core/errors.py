"""The project's own errors: problems with what a user gave it (a config, a file, a folder, data
that cannot give a result, a download). Each message is one line saying what and where.

The entry points print an :class:`InputError` as ``error: MESSAGE`` and exit with code 2 (the
download scripts with 1); every other exception is a bug and keeps its traceback. Errors that
were ``ValueError``s before this class existed stay ``ValueError``s too
(:class:`InputValueError`, ``DatasetError``, ``ScoreFileError``), so that code catching them as
such still does.
"""
from __future__ import annotations


class InputError(Exception):
    """Input the user can fix; the message is one line naming it and what is wrong."""


class InputValueError(InputError, ValueError):
    """Input the project's functions cannot use where they raised a ``ValueError`` before: scores
    of one class only, NaN or constant scores, ASV scores that make the t-DCF meaningless, an
    output file that would overwrite an input, an empty training set."""
