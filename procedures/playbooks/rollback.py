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
                                                              within 2 minutes
    post-deployment-tests.sh                  post_deploy_tests
    (blue-green's cleanup)                    stop_old_slot   the version rolled away from

No monitoring and no baseline: the version rolled back to already ran here, and the point is
to get away from the current one quickly. A failure before ``stop_old_slot`` is compensated as
in the standard playbook: traffic goes back to the version that was live, which keeps running
until the rollback has been verified.

The automatic rollback (the engine undoing a failed run) needs none of this: it is the
compensation of the failed run, without approval.
"""

from __future__ import annotations

from datetime import timedelta

from procedures.checks.http import HttpChecker
from procedures.model import ProcedureKind
from procedures.playbook import Playbook, RetryPolicy, Step
from procedures.playbooks.emergency import PublicHealthVerification
from procedures.playbooks.standard import SWITCH_TIMEOUT, StandardSteps

__all__ = ["ROLLBACK_VERIFY_WITHIN", "rollback_playbook"]

ROLLBACK_VERIFY_WITHIN = timedelta(minutes=2)  # the seed's automatic rollback waits 120 s


def rollback_playbook(*, http: HttpChecker) -> Playbook:
    """The manual rollback (``ProcedureKind.ROLLBACK``); see the module docstring."""
    steps = StandardSteps(http)
    verify = PublicHealthVerification(http, within=ROLLBACK_VERIFY_WITHIN,
                                      what="Post-rollback verification")
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
            Step("verify", "Post-rollback verification: healthy within 2 min", verify,
                 timeout=ROLLBACK_VERIFY_WITHIN + timedelta(seconds=30)),
            Step("post_deploy_tests", "Post-rollback tests on the public URL",
                 steps.post_deploy_tests, timeout=timedelta(minutes=3),
                 retry=RetryPolicy(attempts=2, backoff=timedelta(seconds=5))),
            Step("stop_old_slot", "Stop the slot rolled away from", steps.stop_old_slot,
                 timeout=timedelta(minutes=2), retry=RetryPolicy(attempts=2)),
        ),
    )
