"""Errors of the sandbox's own control surface (not of the ClubCollect API it imitates)."""

from __future__ import annotations


class SandboxInputError(ValueError):
    """
    Input to the sandbox's control API or :class:`~.state.SandboxState` that it cannot use.

    The control API answers it with 422 ``{"error": "invalid_request", "detail": message}``.

    :param message: what is wrong and what is allowed.
    """


class SandboxNotFoundError(LookupError):
    """
    A company or invoice that the sandbox does not hold, asked for through the control API.

    The control API answers it with 404 ``{"error": "not_found", "detail": message}``.

    :param message: what was not found.
    """
