"""User-facing errors.

Every mistake a user can make (a wrong path, a bad preset, a corrupt checkpoint) raises a subclass of
:class:`CifarUtilsError` whose message says what was wrong and how to fix it. The command line turns
these into one line on stderr and exit status 2; notebooks show them as a single clear exception.
"""

import signal
import sys


class CifarUtilsError(Exception):
    """Base class for errors caused by input the user can fix."""


class ConfigError(CifarUtilsError, ValueError):
    """An unknown preset or field, or an invalid value."""


class DataError(CifarUtilsError):
    """Missing, empty, corrupt or inconsistent data."""


class CheckpointError(CifarUtilsError):
    """A checkpoint that is missing, truncated, corrupt or from another setup."""


class OutputExistsError(CifarUtilsError):
    """An output directory that already holds an earlier run, or that another process is writing to."""


class WriteError(CifarUtilsError, OSError):
    """A file that could not be written (full disk, no permission); an earlier file at that path is unchanged.

    An :class:`OSError`, so callers that can carry on without the file (the decode cache) still catch it.
    """

    def __init__(self, path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"could not write {path} ({reason}); any earlier file there is unchanged. "
                         "Free some disk space or fix the folder's permissions, then run again")


class TrainingDivergedError(CifarUtilsError):
    """The loss (or, when ``quantity`` says so, a weight) became NaN or infinite."""

    def __init__(self, epoch: int, batch: int, loss: float, quantity: str = "the loss",
                 kept: str = "the last good checkpoint was kept"):
        self.epoch, self.batch, self.loss, self.quantity = epoch, batch, loss, quantity
        super().__init__(
            f"training diverged: {quantity} became {loss} at epoch {epoch}, mini-batch {batch}. "
            "Try a smaller learning rate, gradient clipping (--grad-clip 1.0, or grad_clip=1.0 in Python) or "
            f"fp32 precision; {kept}."
        )


class TrainingInterrupted(CifarUtilsError):
    """Training stopped by Ctrl-C or SIGTERM (``signum``) after a checkpoint was saved."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signal.Signals(signum)

    @property
    def exit_status(self) -> int:
        """The status a shell gives a process the signal ended: 130 for Ctrl-C, 143 for SIGTERM."""
        return 128 + self.signum


class OutOfMemoryError(CifarUtilsError):
    """The device ran out of memory."""


def run_script(main) -> None:
    """Run a script's ``main()`` so that bad input (a :class:`CifarUtilsError`: a results file that exists, a
    wrong data root or value) ends it as it ends the command line: one ``error:`` line on stderr and exit
    status 2, not a traceback; Ctrl-C ends it with ``interrupted`` and status 130 (a training run stopped by
    SIGTERM after saving its checkpoint: 143)."""
    try:
        main()
    except TrainingInterrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        raise SystemExit(err.exit_status) from None
    except CifarUtilsError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
