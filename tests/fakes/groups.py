"""Slack user groups for tests of the service layer: membership that can change between two
questions, and a count of how often it was read (no cache may decide an approval)."""

from __future__ import annotations

from collections.abc import Iterable


class FakeGroups:
    """``members(group)`` as ``usergroups.users.list`` would answer it now. An unknown group
    is an error, as Slack's ``no_such_subteam`` is."""

    def __init__(self, groups: dict[str, Iterable[str]] | None = None) -> None:
        self._groups = {name: frozenset(users) for name, users in (groups or {}).items()}
        self.reads = 0

    def members(self, group: str, *, max_age: float = 0.0) -> frozenset[str]:
        self.reads += 1
        if group not in self._groups:
            raise LookupError(f"no_such_subteam: {group}")
        return self._groups[group]

    def set(self, group: str, users: Iterable[str]) -> None:
        """Change a group's members (someone added to or removed from it in Slack)."""
        self._groups[group] = frozenset(users)
