"""``/qlp cancel <id>``: stop a deployment and undo what it did.

The same rules as the card's Cancel button, which calls :func:`cancel_deployment` too: the
requester or an approver of the deployment's kind may cancel; the engine's conditional update
lets exactly one of any number of concurrent cancels win; a finished deployment says its state.
"""

from __future__ import annotations

from bot.context import HandlerContext
from bot.grammar import Command
from bot.membership import describe_rule
from procedures.errors import ConflictError, PolicyRefusal, UserError
from procedures.model import DeploymentState
from procedures.store import DeploymentRecord


def cancel_text(ctx: HandlerContext, command: Command) -> str:
    """Look the deployment up by number and cancel it."""
    assert command.number is not None  # the grammar requires it
    deployment = ctx.services.deployments.get(command.number)
    if deployment is None:
        raise UserError(f"There is no deployment #{command.number}.",
                        hint="`/qlp history` lists the recent ones with their numbers.")
    return cancel_deployment(ctx, deployment)


def cancel_deployment(ctx: HandlerContext, deployment: DeploymentRecord) -> str:
    """Cancel ``deployment`` for the person in ``ctx``; the reply text, or raise a refusal.

    Refusals are audited (``cancel.refused``); the engine audits the cancel itself.
    """
    services = ctx.services
    user = ctx.request.user_id
    assert deployment.id is not None
    rule = services.policy.approval_rule(deployment.kind, deployment.environment)
    if user != deployment.requester and not services.groups.may_approve(user, rule):
        message = f"You may not cancel #{deployment.id}."
        services.audit.append(user, "cancel.refused", deployment_id=deployment.id,
                              environment=deployment.environment,
                              detail={"rule": "approvers", "message": message})
        raise PolicyRefusal(message, rule="approvers",
                            hint=f"The requester (<@{deployment.requester}>) or "
                                 f"{describe_rule(rule)} may.")
    if not services.engine.request_cancel(deployment.id, user):
        state = (services.deployments.get(deployment.id) or deployment).state
        raise ConflictError(f"#{deployment.id} is {state.value.replace('_', ' ')}; "
                            "there is nothing to cancel.")
    after = services.deployments.get(deployment.id)
    if after is not None and after.state is DeploymentState.CANCELLED:
        # Nothing had started: the engine ended it and said so on the card.
        return f"You cancelled #{deployment.id} before it started; nothing was changed."
    run = services.views.snapshot(deployment.id)
    services.reporter.run_changed(run)
    services.reporter.event(run, f"Cancel requested by <@{user}>.", broadcast=True)
    services.wake_worker()
    return f"Cancelling #{deployment.id}; completed steps will be undone."
