"""The seed's application-update hook (step 7 of ``database-migration-deployment.sh``).

The seed runs ``deployment/migration-<version>-app-update.sh`` when that file exists: something
the application must do once the new schema is there, whose content the seed does not show. The
bot does not run scripts from a repository; a migration names an HTTP path instead
(``-- qlp: app-update=/admin/reload-schema``, see :mod:`procedures.migrations.files`) and
:class:`AppUpdateHook` POSTs to it on the live slot directly (not the public URL, which answers
503 while maintenance mode is on). Only a 2xx answer counts; redirects are not followed and
proxies from the environment are not used, as for the health checks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

__all__ = ["AppUpdateHook", "HookAnswer"]

USER_AGENT = "qlp-chatops-migration/1"


@dataclass(frozen=True)
class HookAnswer:
    """What the application answered: ``ok`` for 2xx; ``status`` None when nothing answered."""

    url: str
    ok: bool
    status: int | None
    elapsed_ms: float
    detail: str

    def describe(self) -> str:
        outcome = str(self.status) if self.status is not None else self.detail
        return f"POST {self.url}: {outcome} in {self.elapsed_ms:.0f} ms"


class AppUpdateHook:
    """POSTs the migration's name to the application's app-update path.

    ``timeout`` bounds the request (an application reloading its schema may take a while);
    ``transport`` replaces the network in tests.
    """

    def __init__(self, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.timeout = timeout
        self._transport = transport

    def call(self, base_url: str, path: str, migration: str) -> HookAnswer:
        """POST ``{"migration": migration}`` to ``base_url + path``; never raises."""
        url = base_url.rstrip("/") + path
        started = time.perf_counter()
        with httpx.Client(timeout=self.timeout, transport=self._transport,
                          follow_redirects=False, trust_env=False,
                          headers={"User-Agent": USER_AGENT}) as client:
            try:
                response = client.post(url, json={"migration": migration})
            except httpx.HTTPError as exc:
                return HookAnswer(url, False, None, _ms(started),
                                  f"no answer ({type(exc).__name__}: {exc})")
        status = response.status_code
        return HookAnswer(url, 200 <= status < 300, status, _ms(started),
                          response.text[:200].strip())


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
