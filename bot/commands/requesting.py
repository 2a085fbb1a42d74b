"""What every requesting command (deploy, hotfix, emergency, rollback, migrate) shares: asking
the gate (``bot.flows.gate``) at the request moment, auditing a refusal, and writing the request
through the one writer (``bot.flows.requests``). The commands keep only their own texts."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from bot.context import HandlerContext
from bot.flows import Moment, NewRequest
from bot.flows.gate import refusal
from bot.membership import describe_rule
from procedures.decision import Verdict
from procedures.errors import PolicyRefusal
from procedures.model import ProcedureKind
from procedures.store import DeploymentRecord

_BREAK_GLASS = " Or break glass:"


def refused(ctx: HandlerContext, what: str, environment: str | None,
            call: Callable[[], str]) -> str:
    """Run ``call``; a refusal it raises is audited (``<what>.refused``) and passed on."""
    try:
        return call()
    except PolicyRefusal as error:
        ctx.services.audit.append(ctx.request.user_id, f"{what}.refused",
                                  environment=environment,
                                  detail={"rule": error.rule, "message": error.message})
        raise


def judge_request(ctx: HandlerContext, kind: ProcedureKind, environment: str) -> Verdict:
    """The gate's verdict on ``kind`` requested now by the person asking."""
    return ctx.services.flows.gate.judge(kind, ctx.request.user_id, environment,
                                         Moment.REQUEST)


def refuse_unless_allowed(ctx: HandlerContext, kind: ProcedureKind, environment: str, *,
                          takes_override: bool = False) -> Verdict:
    """Ask the gate; raise its refusal (what would allow it included). A command that takes no
    ``--override`` does not offer to break glass."""
    verdict = judge_request(ctx, kind, environment)
    if verdict.allowed:
        return verdict
    if takes_override:
        raise refusal(verdict)
    hint = verdict.what_would_allow.split(_BREAK_GLASS, 1)[0]
    raise PolicyRefusal(f"{verdict.reason}.", rule=verdict.rule, hint=hint or None)


def approvals_needed(ctx: HandlerContext, kind: ProcedureKind,
                     environment: str | None = None) -> str:
    """``1 approval from <@U1> or a member of <!subteam^S1>``."""
    rule = ctx.services.policy.approval_rule(kind, environment)
    plural = "s" if rule.required > 1 else ""
    return f"{rule.required} approval{plural} from {describe_rule(rule)}"


def open_request(
    ctx: HandlerContext, *, kind: ProcedureKind, version: str | None, environment: str,
    reason: str | None, options: Mapping[str, Any], announce: Callable[[int], str],
    broadcast: bool = False, request_key: str | None = None, **extra: Any,
) -> tuple[DeploymentRecord, bool]:
    """Write a request awaiting approval through the service layer's one writer; its card and
    ``announce(id)`` are posted. A Slack retry (same request key) creates nothing new."""
    if request_key is None and ctx.request.request_key:
        request_key = f"command:{ctx.request.request_key}"
    return ctx.services.flows.requests.open(
        NewRequest(kind, version, environment, ctx.request.user_id, reason=reason,
                   options=options, request_key=request_key, **extra),
        announce=announce, broadcast=broadcast)


def steps_listing(ctx: HandlerContext, kind: ProcedureKind,
                  skip: Collection[str] = ()) -> list[str]:
    """``1. Final validation ...`` for a dry run: the playbook's steps minus ``skip``."""
    playbook = ctx.services.playbooks.get(kind)
    if playbook is None:
        return ["(the playbook is not wired into this bot)"]
    chosen = [step for step in playbook.steps if step.name not in skip]
    return [f"{i}. {step.title}" for i, step in enumerate(chosen, 1)]
