"""``/qlp lock <env> --reason "..."`` and ``/qlp unlock <env>``: a person's hold on an
environment.

A manual lock is the environment lock with no deployment and no owning worker: deployments
refuse to start while it is held (``/qlp deploy`` says so; a run that reaches the lock fails
closed) and the stale-lock reaper never frees it. Only the people of the policy's
``approvals.lock`` rule (the ``standard`` approvers when the policy has none) may take one: a
lock stops even an emergency, so not everyone in the workspace may set it (issue 13, finding
6). Its holder lifts it; so may the people of ``approvals.lock`` and of the ``override`` rule.
A lock a deployment holds is not lifted here: cancelling the deployment releases it. The one
exception is the lock a deployment keeps after NEEDS_ATTENTION (an undo failed); an approver
lifts it once someone has looked. A break-glass run granted past a person's lock only passes
it (``procedures.engine``): the lock stays the person's, who may still lift it here during the
run.

Both commands are audited and tell the deployment channel, through the outbox.
"""

from __future__ import annotations

from datetime import datetime

from bot.context import HandlerContext
from bot.formatting import escape, local_time, relative
from bot.grammar import Command
from bot.lookup import environment_of
from bot.membership import describe_rule
from procedures.errors import ConflictError, PolicyRefusal
from procedures.model import DeploymentState
from procedures.policy import ApprovalRule
from procedures.store import DeploymentRecord, EnvironmentRecord

OVERRIDE = "override"
LOCK = "lock"


def lock_text(ctx: HandlerContext, command: Command) -> str:
    """Take the environment's lock for the person, or say who holds it."""
    services = ctx.services
    policy = services.policy
    user = ctx.request.user_id
    env = environment_of(policy, command.environment)
    reason = command.reason or ""  # the grammar requires it for lock
    rule_name, rule = _lock_rule(ctx)
    if not services.groups.may_approve(user, rule):
        raise _refusal(ctx, env, "lock", f"You may not lock {env}: a lock stops every "
                       "deployment to it, an emergency too.", rule_name,
                       f"{describe_rule(rule)} may lock it; ask one of them.")
    current = services.environments.get(env)
    if current is not None and current.lock_holder:
        raise _refuse_locked(ctx, env, current)
    if not services.environments.acquire_lock(env, user, reason, None, None):
        # Someone took it between our look and our update.
        current = services.environments.get(env)
        if current is not None and current.lock_holder:
            raise _refuse_locked(ctx, env, current)
        raise ConflictError(f"{env} changed while I was locking it; nothing was done.",
                            hint="Try again.")
    services.audit.append(user, "environment.locked", environment=env,
                          detail={"reason": reason})
    waiting = [d for d in services.deployments.list_in_states(
        (DeploymentState.PENDING_APPROVAL, DeploymentState.SCHEDULED, DeploymentState.QUEUED),
        environment=env)]
    pending = ("" if not waiting else " Requested deployments ("
               + ", ".join(f"#{d.id}" for d in waiting) + ") will not start while it is held.")
    _notify(ctx, f":lock: <@{user}> locked *{env}*: {escape(reason)}. Deployments to {env} are "
                 f"refused until it is unlocked (`/qlp unlock {env}`).{pending}")
    return (f":lock: {env} is locked: {escape(reason)}. Deployments to it are refused until "
            f"you `/qlp unlock {env}`.{pending} The channel has been told.")


def unlock_text(ctx: HandlerContext, command: Command) -> str:
    """Lift a manual lock (its holder or an approver), or say why not and who may."""
    services = ctx.services
    policy = services.policy
    user = ctx.request.user_id
    env = environment_of(policy, command.environment)
    current = services.environments.get(env)
    if current is None or not current.lock_holder:
        raise ConflictError(f"{env} is not locked; there is nothing to unlock.")
    refused = unlock_refusal(ctx, env, current)
    if refused is not None:
        raise _refusal(ctx, env, "unlock", *refused)
    holder = current.lock_holder
    deployment_id = current.lock_deployment_id
    # Conditional on the same kind of lock we judged: a deployment lock taken in between, or
    # a different deployment's, is left alone.
    if not services.environments.release_lock(env, deployment_id):
        raise ConflictError(f"The lock on {env} changed while I was unlocking it; nothing was "
                            "done.", hint=f"`/qlp status {env}` shows who holds it now.")
    held_for = _since(ctx, current.locked_since)
    services.audit.append(user, "environment.unlocked", deployment_id=deployment_id,
                          environment=env,
                          detail={"holder": holder, "lock_reason": current.lock_reason,
                                  "locked_since": current.locked_since.isoformat()
                                  if current.locked_since else None,
                                  "reason": command.reason})
    why = f": {escape(command.reason)}" if command.reason else ""
    was = f"locked by <@{holder}>{held_for}: {escape(current.lock_reason or 'no reason')}"
    _notify(ctx, f":unlock: <@{user}> unlocked *{env}*{why} (it was {was}). Deployments may "
                 "run again.")
    return f":unlock: {env} is unlocked (it was {was}). The channel has been told."


def unlock_refusal(ctx: HandlerContext, env: str,
                   current: EnvironmentRecord) -> tuple[str, str, str] | None:
    """Why the person asking may not lift ``current`` (message, rule, hint), or None: they
    may. ``/qlp unlock`` and the App Home's Unlock button (``bot.home_buttons``) both ask."""
    services = ctx.services
    user = ctx.request.user_id
    holder = current.lock_holder
    rule_name, rule = _override_rule(ctx)
    deployment_id = current.lock_deployment_id
    if deployment_id is not None:
        deployment = services.deployments.get(deployment_id)
        if deployment is not None and not deployment.state.terminal:
            return (f"{env} is locked by deployment #{deployment_id} "
                    f"({deployment.version or deployment.kind}, {_state(deployment)}); a "
                    "running deployment's lock is released when it ends.", "deployment-lock",
                    f"To stop it, `/qlp cancel {deployment_id}`: its completed steps are "
                    "undone and the lock is released.")
        # A lock left behind by a deployment (NEEDS_ATTENTION): an approver decides.
        if not services.groups.may_approve(user, rule):
            return (f"{env} stays locked after deployment #{deployment_id} "
                    f"({_state(deployment)}) until someone has looked.", rule_name,
                    f"{describe_rule(rule)} may unlock it.")
    elif user != holder:
        lock_name, lock_rule = _lock_rule(ctx)
        if not services.groups.may_approve(user, lock_rule) \
                and not services.groups.may_approve(user, rule):
            who = f"{describe_rule(lock_rule)} (`{lock_name}`)" if lock_rule == rule else \
                (f"{describe_rule(lock_rule)} (`{lock_name}`) or {describe_rule(rule)} "
                 f"(`{rule_name}`)")
            return (f"You may not unlock {env}: <@{holder}> locked it.", lock_name,
                    f"<@{holder}> (who locked it), {who} may unlock it.")
    return None


def _refuse_locked(ctx: HandlerContext, env: str, current: EnvironmentRecord) -> PolicyRefusal:
    """Already locked: by whom, why and since when; a deployment's lock names it."""
    user = ctx.request.user_id
    since = _since(ctx, current.locked_since)
    if current.lock_deployment_id is not None:
        deployment = ctx.services.deployments.get(current.lock_deployment_id)
        what = (f"deployment #{current.lock_deployment_id}"
                + (f" ({deployment.version or deployment.kind}, {_state(deployment)}, "
                   f"requested by <@{deployment.requester}>)" if deployment else ""))
        hint = (f"It stays locked until someone has looked; then an approver can "
                f"`/qlp unlock {env}`." if deployment is None or deployment.state.terminal
                else "No other deployment can start while it holds the lock. Lock again once "
                     f"it has ended, or `/qlp cancel {current.lock_deployment_id}`.")
        return _refusal(ctx, env, "lock", f"{env} is already locked by {what}{since}: "
                        f"{escape(current.lock_reason or 'no reason')}.", "environment-lock",
                        hint)
    who = "you" if current.lock_holder == user else f"<@{current.lock_holder}>"
    hint = (f"To change the reason, `/qlp unlock {env}` and lock it again."
            if current.lock_holder == user else
            f"Ask {who} (or an approver) to `/qlp unlock {env}` first.")
    return _refusal(ctx, env, "lock", f"{env} is already locked by {who}{since}: "
                    f"{escape(current.lock_reason or 'no reason')}.", "environment-lock", hint)


def _refusal(ctx: HandlerContext, env: str, action: str, message: str, rule: str,
             hint: str) -> PolicyRefusal:
    ctx.services.audit.append(ctx.request.user_id, f"{action}.refused", environment=env,
                              detail={"rule": rule, "message": message})
    return PolicyRefusal(message, rule=rule, hint=hint)


def _override_rule(ctx: HandlerContext) -> tuple[str, ApprovalRule]:
    approvals = ctx.services.policy.approvals
    name = OVERRIDE if OVERRIDE in approvals else "standard"
    return f"approvals.{name}", approvals[name]


def _lock_rule(ctx: HandlerContext) -> tuple[str, ApprovalRule]:
    """Who may take a lock (and lift another's): ``approvals.lock``, else the standard
    approvers."""
    approvals = ctx.services.policy.approvals
    name = LOCK if LOCK in approvals else "standard"
    return f"approvals.{name}", approvals[name]


def _notify(ctx: HandlerContext, text: str) -> None:
    channel = ctx.services.policy.channel
    ctx.services.outbox.enqueue(channel, "post", {"text": text},
                                ordering_key=f"channel:{channel}")
    ctx.services.wake_worker()


def _since(ctx: HandlerContext, moment: datetime | None) -> str:
    if moment is None:
        return ""
    now = ctx.services.clock.now()
    return f" since {local_time(moment, ctx.services.policy.zone)} ({relative(moment, now)})"


def _state(deployment: DeploymentRecord | None) -> str:
    return deployment.state.value.replace("_", " ") if deployment else "gone"
