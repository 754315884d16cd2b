"""The errors a user can cause, one family with an exit code each.

Everything the user can fix (a configuration value, a data set, a run directory's files) raises a subclass
of :class:`SSLGraphError` whose message names the key, file or field at fault. The command line catches the
family in one place, prints the message on one line and exits with the class's ``exit_code``; any other
exception is a bug and keeps its traceback. Each class also derives from the built-in type callers caught
before the family existed (``ValueError`` or ``RuntimeError``).
"""

from __future__ import annotations


class SSLGraphError(Exception):
    """A problem the user can fix; the message says what and where."""

    exit_code = 1


class ConfigError(SSLGraphError, ValueError):
    """A configuration value, option or override is missing, malformed or unsupported; the message names the key."""

    exit_code = 2


class DataError(SSLGraphError, ValueError):
    """A data set cannot be read: missing split, empty class folder, unreadable image; names the file or folder."""

    exit_code = 3


class RunError(SSLGraphError, RuntimeError):
    """A run directory's files, a checkpoint or a training run cannot be used or continued."""

    exit_code = 4


class CheckpointError(RunError):
    """A checkpoint or artefact could not be read or written; the message names the file."""


class GraphFileError(RunError, ValueError):
    """A graph or refined-embedding file (or the ``Data`` read from one) breaks the schema; names file and field."""


class RefineError(RunError, ValueError):
    """Refinement cannot start or continue: a checkpoint for other settings, a diverging loss, too few nodes."""


class NonFiniteLossError(RunError):
    """The pretraining loss became NaN or infinite; the last good checkpoint is kept."""
