"""50 people type ``/qlp deploy v1.0.0`` at once on an environment with no history (issue 11).

Signed slash commands into the real app, all in flight together: exactly one request is
created; everyone else is told that it is under way (one deployment at a time).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from procedures.model import DeploymentState as S
from tests.fakes.bot_harness import BotHarness

REQUESTS = 50


def test_fifty_concurrent_deploys_to_a_new_environment_create_one_pending_request(
        bot: BotHarness) -> None:
    assert bot.services.environments.get("production") is None  # no history at all
    barrier = threading.Barrier(REQUESTS)

    def deploy(i: int) -> str:
        barrier.wait(timeout=30)
        response = bot.command("deploy v1.0.0", user=f"U0DEV{i:02d}")
        assert response.status_code == 200
        return response.text

    with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
        answers = list(pool.map(deploy, range(REQUESTS)))

    deployments = bot.services.deployments.list_recent(limit=100)
    assert len(deployments) == 1
    (only,) = deployments
    assert only.state is S.PENDING_APPROVAL
    accepted = [a for a in answers if a.startswith(f"Deployment #{only.id} requested")]
    refused = [a for a in answers if a not in accepted]
    assert len(accepted) == 1 and len(refused) == REQUESTS - 1
    assert all(f"Deployment #{only.id} (v1.0.0, pending approval) is already under way for "
               "production; one deployment at a time" in a for a in refused), refused[:3]
    assert all("one-at-a-time" in a for a in refused)
