"""The one error type of a stage failure, apart from everything else so that any runtime module
(common, tracking, startup, the stages) can raise it without an import cycle."""

from __future__ import annotations

from compiler.spec.errors import DistillcError

EXIT_STAGE_FAILED = 1


class StageError(DistillcError):
    """The one type of a stage failure a user can act on: its message says what and why, in one line.

    Stages raise it (never SystemExit with a text); run_stage prints it naming the stage.
    A DataError (a data file at fault, file:line first) is the other expected kind.
    """

    exit_code = EXIT_STAGE_FAILED
