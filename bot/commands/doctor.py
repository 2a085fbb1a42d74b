"""``/qlp doctor [env]``: everything a deployment needs, checked (approvers only).

The checks call Slack, the database and Azure, so the listener only queues them on the worker's
doctor task (``bot.doctor.DoctorTask``) and answers at once; the report follows as a message
only the person who asked can see.
"""

from __future__ import annotations

from bot.context import HandlerContext
from bot.doctor import DoctorRequest, doctor_task
from bot.grammar import Command
from bot.lookup import environment_of
from bot.membership import describe_rule
from procedures.errors import PolicyRefusal
from procedures.model import ProcedureKind


def doctor_text(ctx: HandlerContext, command: Command) -> str:
    """Queue the checks of one environment (or all) and say the report will follow."""
    services = ctx.services
    user = ctx.request.user_id
    rule = services.policy.approval_rule(ProcedureKind.STANDARD)
    if not services.groups.may_approve(user, rule):
        message = "Only approvers may run `/qlp doctor`."
        services.audit.append(user, "doctor.refused",
                              detail={"rule": "approvers", "message": message})
        raise PolicyRefusal(message, rule="approvers",
                            hint=f"Approvers: {describe_rule(rule)}. On the bot's host, "
                                 "`qlp-bot doctor` prints the same checks.")
    env = environment_of(services.policy, command.environment) if command.environment else None
    doctor_task(services).submit(DoctorRequest(user, ctx.request.channel_id, env))
    services.wake_worker()
    where = f"*{env}*" if env else "every environment"
    return (f":stethoscope: Checking the policy, the database, Slack and {where}. "
            "The report follows here, visible only to you.")
