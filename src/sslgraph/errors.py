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


class UnreadableImagesError(DataError):
    """A split holds files that cannot be decoded; ``paths`` lists every one, so the run layer can write them all
    to a file instead of naming only the first."""

    def __init__(self, message: str, *, split: str, paths: list[str]) -> None:
        super().__init__(message)
        self.split = split
        self.paths = list(paths)


class LockError(RunError):
    """Another process is writing the same run directory."""


class Preempted(SSLGraphError):
    """A stop signal (SIGTERM, SIGUSR1) arrived; the state at the current step was saved and the run stops.

    Not a mistake: the exit code is the shell's for death by that signal (128 + its number, 143 for SIGTERM), so
    a scheduler sees the job as pre-empted, and rerunning the same command continues it.
    """

    def __init__(self, message: str, *, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
