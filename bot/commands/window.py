"""``/qlp window [env]``: may a standard deployment run now; if not, which rule says no and when
the next preferred slot opens, in the policy's time zone."""

from __future__ import annotations

from bot.context import HandlerContext
from bot.formatting import escape, local_time, relative
from bot.grammar import Command
from bot.lookup import environment_of


def window_text(ctx: HandlerContext, command: Command) -> str:
    """The verdict for now, with the rule and the next slot."""
    services = ctx.services
    policy = services.policy
    env = environment_of(policy, command.environment)
    now = services.clock.now()
    verdict = services.windows.verdict(now)
    zone = policy.zone
    lines: list[str] = []
    if verdict.open:
        closes = (f", closes {local_time(verdict.closes_at, zone)} "
                  f"({relative(verdict.closes_at, now)})" if verdict.closes_at else "")
        lines.append(f":large_green_circle: The standard window is *open* for {env}{closes}.")
    else:
        lines.append(f":red_circle: A standard deployment to {env} is *not allowed now*: "
                     f"{escape(verdict.reason)} _(rule: {verdict.rule.value})_.")
        if verdict.next_open:
            lines.append(f"Next preferred slot: *{local_time(verdict.next_open, zone)}* "
                         f"({relative(verdict.next_open, now)}).")
        else:
            lines.append("No preferred slot opens in the next 366 days: check the freezes.")
    lines.append(f"Preferred windows: {services.windows.describe()}.")
    state = services.environments.get(env)
    if state is not None and state.lock_holder:
        since = f" since {local_time(state.locked_since, zone)}" if state.locked_since else ""
        lines.append(f":lock: {env} is locked by <@{state.lock_holder}>{since}: "
                     f"{escape(state.lock_reason or 'no reason given')}.")
    lines.append(f"_Now: {local_time(now, zone)}._")
    return "\n".join(lines)
