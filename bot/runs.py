"""Views of runs for the card: the engine's snapshot plus approvals, notes and the preflight's
evidence, and a reporter that always renders those views (so every card shows who approved and
who still must, and what the checks found before approval)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from bot.preflight import evidence_of
from bot.slack_reporter import SlackReporter
from procedures.engine import Engine
from procedures.playbooks.rehearsal import REHEARSAL_STEPS
from procedures.policy import Policy
from procedures.reporting import Reporter, RunSnapshot
from procedures.store import ApprovalStore, DeploymentStore


class RunViews:
    """Builds the RunSnapshot a card renders, from the database alone."""

    def __init__(self, engine: Engine, approvals: ApprovalStore, deployments: DeploymentStore,
                 policy: Policy) -> None:
        self._engine = engine
        self._approvals = approvals
        self._deployments = deployments
        self._policy = policy

    def snapshot(self, deployment_id: int) -> RunSnapshot:
        return self.enrich(self._engine.snapshot(deployment_id))

    def enrich(self, run: RunSnapshot) -> RunSnapshot:
        record = self._deployments.get(run.deployment_id)
        plan = record.plan_hash if record is not None else None
        approvers = tuple(a.actor for a in self._approvals.for_deployment(
            run.deployment_id, plan or "") if a.decision == "approve")
        options: Mapping[str, Any] = record.options if record is not None else run.options
        notes = tuple(str(n) for n in options.get("notes", ()))
        steps = run.steps
        if self._policy.promoted_from(run.environment) is None:  # never rehearsed elsewhere:
            steps = tuple(s for s in steps if s.name not in REHEARSAL_STEPS)  # not on the card
        return dataclasses.replace(
            run, steps=steps, approvers=approvers, options=options, notes=notes,
            approvals_required=self._policy.approval_rule(run.kind, run.environment).required,
            evidence=evidence_of(record) if record is not None else None)


class CardReporter:
    """A Reporter that enriches every snapshot (approvals, notes) before passing it on."""

    def __init__(self, inner: Reporter) -> None:
        self._inner = inner
        self.views: RunViews | None = None  # set by the wiring once the engine exists

    def _enrich(self, run: RunSnapshot) -> RunSnapshot:
        return self.views.enrich(run) if self.views is not None else run

    def run_changed(self, run: RunSnapshot) -> None:
        self._inner.run_changed(self._enrich(run))

    def event(self, run: RunSnapshot, text: str, *, broadcast: bool = False,
              dedup_key: str | None = None) -> None:
        if dedup_key is None:
            self._inner.event(self._enrich(run), text, broadcast=broadcast)
        elif isinstance(self._inner, SlackReporter):
            self._inner.event(self._enrich(run), text, broadcast=broadcast,
                              dedup_key=dedup_key)
        else:  # a reporter without dedup (tests): at most once is the caller's business
            self._inner.event(self._enrich(run), text, broadcast=broadcast)
