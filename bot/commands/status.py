"""``/qlp status [env]``: live slot, version, previous version, lock, running deployment."""

from __future__ import annotations

from bot.context import HandlerContext
from bot.formatting import escape, local_time, relative
from bot.grammar import Command
from bot.lookup import environment_of
from bot.undelivered import DEAD_WINDOW, report_lines
from procedures.model import ACTIVE_STATES, DeploymentState
from procedures.store import DeploymentRecord as Deployment
from procedures.store import EnvironmentRecord
from storage.status import StatusReader

WAITING_STATES = (DeploymentState.PENDING_APPROVAL, DeploymentState.SCHEDULED)


def status_text(ctx: HandlerContext, command: Command) -> str:
    """One environment in detail, or every environment in a line or two each."""
    policy = ctx.services.policy
    names = [environment_of(policy, command.environment)] if command.environment else list(
        policy.environments)
    # One read-only transaction whatever the number of environments, shared by a burst of
    # status commands (CachedStatusReader): status is typed often, under load.
    reader = ctx.services.status_reader or StatusReader(ctx.services.database)
    now = ctx.services.clock.now()
    snapshot = reader.snapshot(ACTIVE_STATES + WAITING_STATES, dead_since=now - DEAD_WINDOW)
    states: dict[str, EnvironmentRecord] = dict(snapshot.environments)
    running: dict[str, list[Deployment]] = {}
    scheduled: dict[str, list[Deployment]] = {}
    for deployment in snapshot.deployments:
        if deployment.state in ACTIVE_STATES:
            running.setdefault(deployment.environment, []).append(deployment)
        elif deployment.scheduled_at is not None:
            scheduled.setdefault(deployment.environment, []).append(deployment)
    sections = [_one(ctx, name, states.get(name), running.get(name, []))
                + _scheduled(ctx, scheduled.get(name, [])) for name in names]
    stuck = report_lines(snapshot.undelivered, now) if snapshot.undelivered else []
    return "\n\n".join([*sections, *(["\n".join(stuck)] if stuck else [])])


def _scheduled(ctx: HandlerContext, waiting: list[Deployment]) -> str:
    """``Scheduled: #12 v1.2.3 Tue 2026-12-01 10:00 UTC (in 2d 1h), approved`` lines."""
    zone = ctx.services.policy.zone
    now = ctx.services.clock.now()
    lines = []
    for deployment in sorted(waiting, key=lambda d: (d.scheduled_at, d.id)):
        assert deployment.scheduled_at is not None
        approval = ("approved" if deployment.state is DeploymentState.SCHEDULED
                    else "waiting for approval")
        lines.append(f"\n:calendar: Scheduled: #{deployment.id} {deployment.version} at "
                     f"{local_time(deployment.scheduled_at, zone)} "
                     f"({relative(deployment.scheduled_at, now)}) by "
                     f"<@{deployment.requester}>, {approval}")
    return "".join(lines)


def _one(ctx: HandlerContext, env: str, state: EnvironmentRecord | None,
         running: list[Deployment]) -> str:
    services = ctx.services
    zone = services.policy.zone
    now = services.clock.now()
    lines = [f"*{env}* ({services.policy.environments[env].url})"]
    if state is None or state.live_version is None:
        lines.append("No deployment recorded yet.")
    else:
        lines.append(f"Live: *{escape(state.live_version)}* on {state.live_slot}"
                     + (f"; previous: {escape(state.previous_version)} on {state.previous_slot}"
                        if state.previous_version else "; no previous version"))
    if state is not None and state.lock_holder:
        since = (f" since {local_time(state.locked_since, zone)} "
                 f"({relative(state.locked_since, now)})" if state.locked_since else "")
        lines.append(f":lock: Locked by <@{state.lock_holder}>{since}: "
                     f"{escape(state.lock_reason or 'no reason given')}")
    else:
        lines.append("Not locked.")
    if not running:
        lines.append("No deployment running.")
    for active in running:
        step = f", step `{active.current_step}`" if active.current_step else ""
        lines.append(f"Running: #{active.id} {active.kind} {active.version} by "
                     f"<@{active.requester}>, {active.state}{step}")
    return "\n".join(lines)
