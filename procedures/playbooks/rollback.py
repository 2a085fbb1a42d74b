"""The manual rollback playbook: the seed's ``manual-rollback.sh`` as durable, undoable steps.

A manual rollback is a blue-green deployment of an *older* version (the run's ``version``,
chosen by ``/qlp rollback``: the one live before the current one, or the one named), asked for
with a reason and approved by someone in ``approvals.rollback`` who is not the requester. The
seed's ``read -p "Confirm rollback"`` is Slack's confirm dialog on the Roll back button; its
log line is the deployment row and the audit log. Steps::

    seed                                      step
    create-snapshot.sh rollback-snapshot      snapshot
    blue-green-deploy.sh $ROLLBACK_VERSION    deploy_idle_slot, wait_healthy, smoke_tests,
                                              switch_traffic
    (automatic-rollback.sh's verification)    verify          the public URL is healthy
                                                              within monitoring.rollback_verify
                                                              (2 minutes), tried every 5 s
    post-deployment-tests.sh                  post_deploy_tests
    (blue-green's cleanup)                    stop_old_slot   the version rolled away from

No monitoring and no baseline: the version rolled back to already ran here, and the point is
to get away from the current one quickly. A failure before ``stop_old_slot`` is compensated as
in the standard playbook: traffic goes back to the version that was live, which keeps running
until the rollback has been verified.

The automatic rollback (the engine undoing a failed run) needs none of this: it is the
compensation of the failed run, without approval. Its undo of ``switch_traffic``
(``procedures.playbooks.standard.restore_previous``) switches back, or redeploys the previous
version when its colour is gone, and verifies the public URL the same way as ``verify`` here.
"""

from __future__ import annotations

from datetime import timedelta

from procedures.checks.http import HttpChecker
from procedures.model import ProcedureKind
from procedures.playbook import Playbook, RetryPolicy, Step, StepContext, StepResult
from procedures.playbooks.standard import SWITCH_TIMEOUT, StandardSteps, verify_rollback
from procedures.policy import Monitoring

__all__ = ["ROLLBACK_VERIFY_WITHIN", "rollback_playbook"]

ROLLBACK_VERIFY_WITHIN = timedelta(minutes=2)  # the seed's automatic rollback waits 120 s
VERIFY_MARGIN = timedelta(seconds=30)


class _Verify:
    """The public URL healthy within the policy's ``monitoring.rollback_verify``."""

    def __init__(self, http: HttpChecker) -> None:
        self.http = http

    def __call__(self, ctx: StepContext) -> StepResult:
        return verify_rollback(ctx, self.http, what="Post-rollback verification",
                               hint="traffic goes back to the previous slot")


def rollback_playbook(*, http: HttpChecker, monitoring: Monitoring | None = None) -> Playbook:
    """The manual rollback (``ProcedureKind.ROLLBACK``); see the module docstring.

    ``monitoring`` (the policy's section) sizes the verify step's timeout: its
    ``rollback_verify`` plus 30 s; the verification never outlives its step.
    """
    within = (monitoring or Monitoring()).rollback_verify
    steps = StandardSteps(http)
    verify = _Verify(http)
    return Playbook(
        kind=ProcedureKind.ROLLBACK,
        title="Manual rollback",
        steps=(
            Step("snapshot", "Rollback snapshot of the live slot and version", steps.snapshot,
                 timeout=timedelta(minutes=1), retry=RetryPolicy(attempts=3)),
            Step("deploy_idle_slot", "Deploy the earlier version to the idle slot",
                 steps.deploy_idle_slot, undo=steps.undo_deploy_idle_slot,
                 timeout=timedelta(minutes=10),
                 retry=RetryPolicy(attempts=2, backoff=timedelta(seconds=5))),
            Step("wait_healthy", "Wait until it is healthy", steps.wait_healthy,
                 timeout=timedelta(minutes=15)),
            Step("smoke_tests", "Smoke tests on the idle slot", steps.smoke_tests,
                 timeout=timedelta(minutes=3),
                 retry=RetryPolicy(attempts=3, backoff=timedelta(seconds=5))),
            Step("switch_traffic", "Switch traffic to the earlier version",
                 steps.switch_traffic, undo=steps.undo_switch_traffic,
                 timeout=SWITCH_TIMEOUT,
                 retry=RetryPolicy(attempts=3, backoff=timedelta(seconds=2))),
            Step("verify", "Post-rollback verification: the public URL healthy", verify,
                 timeout=within + VERIFY_MARGIN),
            Step("post_deploy_tests", "Post-rollback tests on the public URL",
                 steps.post_deploy_tests, timeout=timedelta(minutes=3),
                 retry=RetryPolicy(attempts=2, backoff=timedelta(seconds=5))),
            Step("stop_old_slot", "Stop the slot rolled away from", steps.stop_old_slot,
                 timeout=timedelta(minutes=2), retry=RetryPolicy(attempts=2)),
        ),
    )
