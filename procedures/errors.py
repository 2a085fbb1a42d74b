"""The one error tree of the project.

Every error the bot expects derives from :class:`QlpError`. ``bot.replies`` turns each branch
into a Slack reply in one place, so a listener never shows a traceback.

    QlpError
    ├── UserError               bad input: what was wrong and what is accepted
    ├── PolicyRefusal           the policy says no: which rule, and what would allow it
    ├── StepFailure             a playbook step failed
    ├── ExternalServiceError    Slack, Azure, a database or an HTTP check failed (maybe retryable)
    ├── ConflictError           someone else got there first (already approved, lock held)
    └── ConfigError             the settings or the policy file are wrong
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class QlpError(Exception):
    """Root of every error the bot raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class UserError(QlpError):
    """The request is malformed. ``hint`` says what is accepted."""


@dataclass(frozen=True)
class Offer:
    """A follow-up the person refused may take in one click: ``command`` (the text of a
    ``/qlp`` command) run as themselves, e.g. scheduling for the next preferred slot."""

    label: str
    command: str


class PolicyRefusal(QlpError):
    """The policy refuses the request. ``rule`` names the rule that refused; ``offer`` is
    what the person may do instead in one click, if anything."""

    def __init__(self, message: str, *, rule: str, hint: str | None = None,
                 offer: Offer | None = None) -> None:
        super().__init__(message, hint=hint)
        self.rule = rule
        self.offer = offer


class ConflictError(QlpError):
    """Another actor already changed the thing this request wanted to change."""


class StepFailure(QlpError):
    """A playbook step failed; ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool = False, hint: str | None = None,
                 result: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retryable = retryable
        self.result = result  # what the step saw before it failed; kept on its step record


class ExternalServiceError(QlpError):
    """A service outside the bot failed; adapters mark whether a retry may help."""

    def __init__(
        self,
        service: str,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service
        self.retryable = retryable
        self.retry_after = retry_after
        self.code = code


class ConfigError(QlpError):
    """The settings or the policy file are invalid. ``key`` names the offending key."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class MetricsUnavailable(ExternalServiceError):
    """The platform's monitoring could not be read: a failure, not "no data". ``code`` is
    Azure's (``SemanticError``, ``AuthorizationFailed``, ``PartialError``...), ``detail`` Azure's
    own message, ``fix`` what to do about it. ``reason`` puts them in that order (code and fix
    first, so a one-line finding cut to length keeps them) and ``message`` is ``<service>:
    <reason>``, so any caller that shows the message shows the fix too. Checks show it as
    inconclusive with that reason, never as a pass."""

    def __init__(
        self,
        service: str,
        detail: str,
        *,
        code: str,
        fix: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        reason = f"{code} ({fix}): {detail}" if fix else f"{code}: {detail}"
        super().__init__(service, reason, retryable=retryable, retry_after=retry_after,
                         code=code)
        self.reason = reason
        self.detail = detail
        self.fix = fix
