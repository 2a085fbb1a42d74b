"""The local platform: blue and green as real processes on this machine, a real router process
on the environment's URL in front of them, and a sample service to deploy.

``LocalPlatform`` implements :class:`procedures.platforms.base.Platform`; ``router`` and
``sample_service`` are runnable modules (``python -m ...``); ``processes`` starts, finds and
stops the detached processes behind pid files.
"""

from procedures.platforms.local.platform import LocalPlatform

__all__ = ["LocalPlatform"]
