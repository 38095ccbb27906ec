"""Errors that the CLI turns into one clear sentence and an exit code.

Library code raises these instead of printing, so a test can assert on the
message and the command line can stay free of tracebacks (unless --debug).
"""

from __future__ import annotations


class WenlanError(Exception):
    """A failure the user can act on; the message names the file, field or option."""

    exit_code = 1


class DataError(WenlanError):
    """Bad or unreadable input data (annotation files, images, captions)."""


class CheckpointError(WenlanError):
    """A checkpoint that is missing, truncated, tampered with or incompatible."""


class TrainingError(WenlanError):
    """A run that failed while training (NaN loss, a failed checkpoint write...)."""


class ExportError(WenlanError):
    """An export that failed or did not reproduce the model (nothing was written)."""


class UsageError(WenlanError):
    """Options that contradict each other or name something that does not exist."""

    exit_code = 2
