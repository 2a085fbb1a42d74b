"""The playbooks: each procedure kind as an ordered tuple of durable steps.

Playbooks import no SDK (import-linter checks it): they act through the platform protocol,
the metrics source and the checks in ``procedures.checks``.
"""

from procedures.playbooks.standard import StandardSteps, standard_playbook

__all__ = ["StandardSteps", "standard_playbook"]
