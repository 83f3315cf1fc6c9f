"""Errors that the command line turns into one line on stderr and an exit code."""

from __future__ import annotations


class SubsyncError(Exception):
    """An operation failed for a reason the message explains (exit code 1)."""

    exit_code = 1


class NotFoundError(SubsyncError):
    """A referenced row does not exist (in that namespace)."""


class ConflictError(SubsyncError):
    """The request contradicts what is stored (e.g. an id owned by another subscription)."""


class InvalidInputError(SubsyncError):
    """The input is malformed or breaks a rule (exit code 2)."""

    exit_code = 2
