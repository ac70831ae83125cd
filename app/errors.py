"""The domain's vocabulary of failures. Imports nothing: every layer may raise these, and the API layer
alone turns them into HTTP answers (``app/api/errors.py``).

    LabrunError                 a request the service refuses; the message says what to do
    ├── NotFound                no such user
    │   ├── RunNotFound         no run has that name
    │   └── RunFileNotFound     no regular file at that path in the run's directory (links are not followed)
    ├── RunGone                 the run's files were deleted (its record stays)
    ├── RangeNotSatisfiable     a Range that starts past the file's end (``size``: what there is)
    ├── InvalidPath             a file path that is not plain and relative (``..``, absolute, NUL)
    ├── InvalidRun              the overrides do not make a valid, safe run (names the override + fix)
    ├── RunConflict             the request contradicts the run's state (cancel a finished run, an
    │                           Idempotency-Key reused for a different request)
    ├── InvalidReservation      a reservation's window or size is wrong or over the user's grant
    ├── ReservationConflict     a reservation's GPUs are booked by another for an overlapping window
    ├── Unauthenticated         no token, or one that is wrong or revoked
    ├── Forbidden               the caller may not do this (another user's run, an admin's action)
    ├── TooManyRuns             a per-user limit (runs queued at once) says no more for now
    ├── TooManyLoginFailures    this address sent too many wrong tokens lately (``retry_after`` s)
    ├── InsufficientStorage     the output directory's disk is (nearly) full: nothing new is accepted
    ├── StoreUnavailable        the run store cannot write now (read-only filesystem, locked database);
    │                           reads keep working
    └── CurvesUnavailable       a big metrics.csv's read failed (its reader process died); asking again
                                reads it afresh
    EngineUnavailable           the engine (Docker, Slurm, ...) cannot be reached right now; runs stay
                                queued (or running) and are retried
    LaunchError                 the engine refused to start a run (bad image, ...); the run fails with it
"""

from __future__ import annotations


class LabrunError(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(LabrunError):
    pass


class RunNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"no run named {name!r}")


class RunFileNotFound(NotFound):
    pass


class RunGone(LabrunError):
    pass


class RangeNotSatisfiable(LabrunError):
    def __init__(self, detail: str, size: int) -> None:
        super().__init__(detail)
        self.size = size


class InvalidPath(LabrunError):
    pass


class InvalidRun(LabrunError):
    pass


class RunConflict(LabrunError):
    pass


class InvalidReservation(LabrunError):
    pass


class ReservationConflict(LabrunError):
    pass


class Unauthenticated(LabrunError):
    pass


class Forbidden(LabrunError):
    pass


class TooManyRuns(LabrunError):
    pass


class TooManyLoginFailures(LabrunError):
    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class InsufficientStorage(LabrunError):
    pass


class StoreUnavailable(LabrunError):
    pass


class CurvesUnavailable(LabrunError):
    pass


class EngineUnavailable(RuntimeError):
    """The engine cannot be reached right now. Runs stay queued (or running) and are retried later."""


class LaunchError(RuntimeError):
    """The run could not be started (bad image, engine refused, ...). The run fails with this reason."""
