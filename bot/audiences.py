"""Telling the audiences when a deployment starts and ends (seed: notify the teams of every
deployment, hotfix, emergency and rollback).

Engineering and customer success hear of each start and each end; leadership too for a major
version and for every emergency. Each notice is a Slack post to the audience's channel and an
e-mail to its addresses (``bot.notify``), through the outbox, once per deployment and phase
(outbox dedup keys ``audience:<phase>:<id>``, so a restart or a repeated report never tells
anyone twice).

:class:`AudienceReporter` watches the engine's reports, as ``bot.paging.PagingReporter`` does,
and forwards everything to the reporter it wraps.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, Protocol

from bot.formatting import escape
from bot.notify import notify_audiences
from procedures.durations import format_duration
from procedures.model import DeploymentState, ProcedureKind
from procedures.policy import Policy
from procedures.reporting import Reporter, RunSnapshot
from storage.outbox import Outbox

log = logging.getLogger(__name__)

AUDIENCES = ("engineering", "customer-success")
"""Told of every start and end."""
MAJOR_AUDIENCE = "leadership"
"""Told too of a major version and of every emergency."""
TOLD_KINDS = frozenset({ProcedureKind.STANDARD, ProcedureKind.HOTFIX,
                        ProcedureKind.EMERGENCY, ProcedureKind.ROLLBACK})

_S = DeploymentState
_MAJOR = re.compile(r"v?([0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?", re.ASCII)  # not look-alikes
_ENDING = {
    _S.SUCCEEDED: (":white_check_mark:", "succeeded"),
    _S.ROLLED_BACK: (":leftwards_arrow_with_hook:", "was rolled back"),
    _S.FAILED: (":x:", "failed"),
    _S.CANCELLED: (":no_entry_sign:", "was cancelled"),
    _S.NEEDS_ATTENTION: (":rotating_light:", "needs attention"),
}
_LABEL = {ProcedureKind.STANDARD: "Deployment", ProcedureKind.HOTFIX: "Hotfix",
          ProcedureKind.EMERGENCY: "Emergency deployment", ProcedureKind.ROLLBACK: "Rollback"}


def is_major(version: str | None, live_version: str | None) -> bool:
    """A major version: its major number differs from the live one's, or it is ``X.0.0``."""
    new = _MAJOR.match(version or "")
    if new is None:
        return False
    live = _MAJOR.match(live_version or "")
    if live is not None:
        return new.group(1) != live.group(1)
    return (new.group(2) or "0") == "0" and (new.group(3) or "0") == "0"


class LiveVersions(Protocol):
    """``storage.environments``: what runs where."""

    def get(self, environment: str) -> Any: ...


class AudienceReporter:
    """Forwards every report to ``inner``; tells the audiences of starts and ends."""

    def __init__(self, inner: Reporter, outbox: Outbox, policy: Policy,
                 environments: LiveVersions) -> None:
        self._inner = inner
        self._outbox = outbox
        self._policy = policy
        self._environments = environments
        self._told: set[tuple[int, str]] = set()  # saves a dedup write per report
        self._major: dict[int, bool] = {}
        self._lock = threading.Lock()

    def run_changed(self, run: RunSnapshot) -> None:
        self._inner.run_changed(run)
        try:
            self._tell(run)
        except Exception:  # telling audiences must never stop a run; the next report retries
            log.warning("audience notice of #%s failed", run.deployment_id, exc_info=True)

    def event(self, run: RunSnapshot, text: str, *, broadcast: bool = False,
              dedup_key: str | None = None) -> None:
        if dedup_key is None:
            self._inner.event(run, text, broadcast=broadcast)
        else:
            self._inner.event(run, text, broadcast=broadcast,  # type: ignore[call-arg]
                              dedup_key=dedup_key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _tell(self, run: RunSnapshot) -> None:
        if run.kind not in TOLD_KINDS or (not self._policy.notifications.audiences \
                and self._policy.notifications.email is None):
            return
        if run.state in (_S.RUNNING, _S.ROLLING_BACK) and run.started_at is not None:
            self._once(run, "start", self._start_text(run))
        elif run.state in _ENDING and run.started_at is not None:
            self._once(run, "end", self._end_text(run))

    def _once(self, run: RunSnapshot, phase: str, text: tuple[str, str]) -> None:
        key = (run.deployment_id, phase)
        with self._lock:
            if key in self._told:
                return
        body, subject = text
        notify_audiences(self._outbox, self._policy, self._audiences(run), body,
                         subject=subject, dedup_key=f"audience:{phase}:{run.deployment_id}",
                         deployment_id=run.deployment_id)
        with self._lock:
            self._told.add(key)

    def _audiences(self, run: RunSnapshot) -> list[str]:
        major = self._major_of(run)
        extra = [MAJOR_AUDIENCE] if major or run.kind is ProcedureKind.EMERGENCY else []
        return [*AUDIENCES, *extra]

    def _major_of(self, run: RunSnapshot) -> bool:
        with self._lock:
            known = self._major.get(run.deployment_id)
        if known is not None:
            return known
        state = self._environments.get(run.environment)
        live = None
        if state is not None:  # before the switch the live version is the old one
            live = state.previous_version if run.state is _S.SUCCEEDED \
                and state.live_version == run.version else state.live_version
        major = run.kind is not ProcedureKind.ROLLBACK and is_major(run.version, live)
        with self._lock:
            self._major[run.deployment_id] = major
        return major

    def _start_text(self, run: RunSnapshot) -> tuple[str, str]:
        what = _LABEL[run.kind]
        major = " (major version)" if self._major_of(run) else ""
        reason = f" Reason: {escape(run.reason)}." if run.reason else ""
        body = (f":rocket: *{what} #{run.deployment_id} started*: {run.version} to "
                f"{run.environment}{major}, requested by <@{run.requester}>.{reason}")
        return body, f"{what} #{run.deployment_id} started: {run.version} to {run.environment}"

    def _end_text(self, run: RunSnapshot) -> tuple[str, str]:
        what = _LABEL[run.kind]
        icon, outcome = _ENDING[run.state]
        took = ""
        if run.started_at is not None and run.finished_at is not None:
            took = f" in {format_duration(run.finished_at - run.started_at)}"
        error = f" ({escape(run.error)})" if run.error and run.state is not _S.SUCCEEDED else ""
        body = (f"{icon} *{what} #{run.deployment_id} {outcome}*{took}: {run.version} to "
                f"{run.environment}{error}.")
        return body, (f"{what} #{run.deployment_id} {outcome}: {run.version} to "
                      f"{run.environment}")
