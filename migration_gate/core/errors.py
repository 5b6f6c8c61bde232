"""Errors a person reads: one line each, and the exit code the CLI maps them to."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # a migration or a check failed
EXIT_USAGE = 2  # bad input, connection or preflight problem: nothing was touched


class GateError(Exception):
    """An expected failure, shown to a person as one line without a traceback."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(GateError):
    """Bad options, a bad migrations directory, an unreachable server: exit 2, nothing written."""

    exit_code = EXIT_USAGE


class PlanError(UsageError):
    """The migration files or the ledger do not allow the requested run."""


class MigrationFailed(GateError):
    """A statement failed; its file was rolled back, earlier files stay applied."""

    def __init__(self, file_name: str, line: int, pg_message: str, sqlstate: str | None = None) -> None:
        super().__init__(f"{file_name}:{line}: {pg_message} (this file was rolled back)")
        self.file_name = file_name
        self.line = line
        self.pg_message = pg_message
        self.sqlstate = sqlstate  # PostgreSQL's error code: 55P03 is a lock timeout


class LockTimedOut(MigrationFailed):
    """The migration could not get its locks within the lock timeout, retries included."""

    def __init__(self, file_name: str, line: int, what: str) -> None:
        GateError.__init__(self, f"{file_name}:{line}: {what} (this file was rolled back)")
        self.file_name = file_name
        self.line = line
        self.pg_message = what
        self.sqlstate = "55P03"
