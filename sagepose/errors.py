"""The errors sagepose raises on purpose: each says, in one line, which file, argument or setting is wrong.

Every purposeful error class derives from :class:`SagePoseError` (and from the builtin its callers
expect: ``ConfigError`` and ``DataError`` are ``ValueError`` s, ``CheckpointReadError`` a ``RuntimeError``,
``ImageReadError`` an ``OSError``), so the ``sagepose`` command can print them as one line
(``sagepose: error: ...``) and keep the traceback for everything else -- the bugs.
``SAGEPOSE_TRACEBACK=1`` shows the traceback for these too.
"""
from __future__ import annotations


class SagePoseError(Exception):
    """Base of the errors raised on purpose, with a message meant for the user."""


class DataError(SagePoseError, ValueError):
    """A dataset file with content sagepose cannot use; the message starts with the file (and record)."""


class ConfigMismatchWarning(UserWarning):
    """The model a checkpoint was trained as differs from the one it is being loaded into."""


class OutputExistsError(SagePoseError, FileExistsError):
    """A command would replace a file a previous run wrote; ``--overwrite`` allows it."""
