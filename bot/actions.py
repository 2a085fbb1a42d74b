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

ALL_ACTIONS = (APPROVE, REJECT, CANCEL, ROLLBACK, CHECKLIST_TICK, OFFER)
