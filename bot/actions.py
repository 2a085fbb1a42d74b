"""The slash command and every Block Kit ``action_id`` the bot registers.

``tests/test_manifest.py`` checks these against ``manifest.yml`` and the registered listeners.
"""

from __future__ import annotations

COMMAND = "/qlp"

APPROVE = "qlp_approve"
REJECT = "qlp_reject"
CANCEL = "qlp_cancel"
ROLLBACK = "qlp_rollback"
CHECKLIST_TICK = "qlp_checklist_tick"
OFFER = "qlp_offer"  # a refusal's one-click alternative, e.g. "Schedule for Tue 10:00"
HOME_DEPLOY = "qlp_home_deploy"  # the App Home's buttons (bot.home), value: an environment
HOME_ROLLBACK = "qlp_home_rollback"
HOME_UNLOCK = "qlp_home_unlock"

ALL_ACTIONS = (APPROVE, REJECT, CANCEL, ROLLBACK, CHECKLIST_TICK, OFFER, HOME_DEPLOY,
               HOME_ROLLBACK, HOME_UNLOCK)
