"""The deployments service layer: what happens to a deployment before its run, in one place.

:class:`~bot.flows.gate.Gate` is the one policy gate (every kind, every moment: request,
approval, run start); :class:`~bot.flows.requests.RequestWriter` the one writer of requests.
Slash commands, buttons, scheduled jobs and the run queue call these; they never decide or
write a request themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.flows.gate import Gate, Moment
from bot.flows.requests import NewRequest, RequestWriter

__all__ = ["DeploymentFlows", "Gate", "Moment", "NewRequest", "RequestWriter"]


@dataclass(frozen=True)
class DeploymentFlows:
    """The service layer's parts, built once by the composition root."""

    gate: Gate
    requests: RequestWriter
