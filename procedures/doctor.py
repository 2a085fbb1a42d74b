"""``qlp-bot doctor``: what a deployment needs, checked one line at a time before it runs.

A *check* is a named callable that returns one or more :class:`CheckResult`; :func:`run_checks`
runs them in order and collects a :class:`DoctorReport`. A check that raises is reported as a
failure of that check (with the error's message and hint), so one broken service never hides
the lines after it. The verdicts:

- ``ok``: checked, fine;
- ``warn``: a deployment can run, but something is missing or not checked (a container group
  not created yet, no telemetry configured);
- ``FAIL``: a deployment would fail: the line says how to fix it;
- ``skipped``: not checked here (no Slack token in the local shell), never a failure.

The report's exit code is 0 only when no check failed. This module knows no SDK: the checks
themselves live where their SDKs may be imported (``procedures.platforms.azure.doctor``,
``bot.doctor``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from procedures.errors import QlpError

__all__ = ["Check", "CheckResult", "DoctorReport", "Verdict", "run_checks"]


class Verdict(StrEnum):
    """How one check came out."""

    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class CheckResult:
    """One line of the report: ``area`` (``policy``, ``slack``, ``production``...), what was
    checked, the verdict, what was found and, for a failure or a warning, how to fix it."""

    area: str
    name: str
    verdict: Verdict
    detail: str
    fix: str | None = None

    @property
    def failed(self) -> bool:
        return self.verdict is Verdict.FAIL

    def line(self) -> str:
        """``[FAIL] production: Key Vault secret database-url: ... -> fix: ...``."""
        text = f"[{self.verdict.value}] {self.area}: {self.name}: {self.detail}"
        if self.fix and self.verdict in (Verdict.FAIL, Verdict.WARN):
            text += f" -> fix: {self.fix}"
        return text


def ok(area: str, name: str, detail: str) -> CheckResult:
    return CheckResult(area, name, Verdict.OK, detail)


def warn(area: str, name: str, detail: str, fix: str | None = None) -> CheckResult:
    return CheckResult(area, name, Verdict.WARN, detail, fix)


def fail(area: str, name: str, detail: str, fix: str | None = None) -> CheckResult:
    return CheckResult(area, name, Verdict.FAIL, detail, fix)


def skipped(area: str, name: str, detail: str) -> CheckResult:
    return CheckResult(area, name, Verdict.SKIPPED, detail)


CheckOutcome = CheckResult | Iterable[CheckResult]


@dataclass(frozen=True)
class Check:
    """A named check: ``run()`` returns one result or several (one per secret, per colour)."""

    area: str
    name: str
    run: Callable[[], CheckOutcome]


@dataclass(frozen=True)
class DoctorReport:
    """Every check's results, in the order they ran."""

    results: tuple[CheckResult, ...]

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(result for result in self.results if result.failed)

    @property
    def ok(self) -> bool:
        """A deployment can run: nothing failed (warnings allowed)."""
        return not self.failures

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def summary(self) -> str:
        counts = {verdict: 0 for verdict in Verdict}
        for result in self.results:
            counts[result.verdict] += 1
        warnings = counts[Verdict.WARN]
        parts = [f"{counts[Verdict.OK]} ok",
                 f"{warnings} warning{'s' if warnings != 1 else ''}",
                 f"{counts[Verdict.FAIL]} failed"]
        if counts[Verdict.SKIPPED]:
            parts.append(f"{counts[Verdict.SKIPPED]} skipped")
        verdict = ("a deployment can run" if self.ok
                   else "a deployment cannot run until the failures are fixed")
        return f"{', '.join(parts)}: {verdict}."

    def text(self) -> str:
        """Plain text, one line per check, then the summary."""
        return "\n".join([*(result.line() for result in self.results), self.summary()])


def _describe(error: BaseException) -> tuple[str, str | None]:
    if isinstance(error, QlpError):
        return error.message, error.hint
    return f"{type(error).__name__}: {error}", None


def run_checks(checks: Iterable[Check]) -> DoctorReport:
    """Run ``checks`` in order; a check that raises fails with the error's message."""
    results: list[CheckResult] = []
    for check in checks:
        try:
            outcome = check.run()
            if isinstance(outcome, CheckResult):
                results.append(outcome)
            else:
                results.extend(outcome)
        except Exception as error:  # one broken check must not hide the others
            message, hint = _describe(error)
            results.append(fail(check.area, check.name, message, hint))
    return DoctorReport(tuple(results))
