"""The CI status of the branch being deployed (the seed's 2.1 item 3), from GitHub Actions.

:meth:`GitHubActionsStatus.latest` reads the newest run of one workflow on one branch through
``GET /repos/{owner}/{repo}/actions/workflows/{workflow}/runs?branch=...&per_page=1`` and
returns a :class:`CiResult`: ``conclusion`` (``success``, ``failure``, ``cancelled``... or None
while the run is not finished) and ``status`` (``completed``, ``in_progress``, ``queued``...).
:attr:`CiResult.green` is True only for a completed, successful run; the caller decides what
an unfinished run means (``final_validation`` treats it as not green).

The repository (``owner/repo``) and workflow (a file name such as ``deploy.yml`` or a numeric
workflow id) are validated strictly before they become part of a URL path, so a policy value
cannot reach another API path. The branch only ever travels as a query parameter.

Errors become :class:`~procedures.errors.ExternalServiceError` with ``service="GitHub"``:
retryable for 5xx, 429, a 403 that is a rate limit, timeouts and network errors, with
``retry_after`` from ``Retry-After`` (or ``X-RateLimit-Reset``) when GitHub sends it; a 404
(unknown repository or workflow, or a token that cannot see it) and other 4xx are not
retryable. No run at all on the branch is a result (``CiResult.none``), not an error.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from procedures.errors import ExternalServiceError

__all__ = [
    "DEFAULT_API_URL",
    "CiResult",
    "GitHubActionsStatus",
    "validate_branch",
    "validate_repository",
    "validate_workflow",
]

DEFAULT_API_URL = "https://api.github.com"
SERVICE = "GitHub"
API_VERSION = "2022-11-28"
USER_AGENT = "qlp-chatops-ci-check/1"

_NAME = r"[A-Za-z0-9_.-]+"
_REPOSITORY = re.compile(rf"^(?P<owner>{_NAME})/(?P<repo>{_NAME})$")
_WORKFLOW = re.compile(r"^(?:[0-9]+|[A-Za-z0-9_.-]+\.ya?ml)$")
_BRANCH = re.compile(r"^[A-Za-z0-9._/-]{1,255}$")


def validate_repository(repository: str) -> tuple[str, str]:
    """``owner/repo`` -> (owner, repo); ValueError for anything else (no ``..``, no extra ``/``)."""
    match = _REPOSITORY.fullmatch(repository)
    if not match or match["owner"] in {".", ".."} or match["repo"] in {".", ".."}:
        raise ValueError(f"{repository!r} is not a GitHub repository; write owner/repo "
                         "(letters, digits, '_', '.', '-')")
    return match["owner"], match["repo"]


def validate_workflow(workflow: str) -> str:
    """A workflow file name (``deploy.yml``) or numeric id; ValueError for anything else."""
    if not _WORKFLOW.fullmatch(workflow) or workflow.startswith("."):
        raise ValueError(f"{workflow!r} is not a workflow; give its file name (deploy.yml) "
                         "or its numeric id")
    return workflow


def validate_branch(branch: str) -> str:
    """A git branch name of safe characters (it is sent as a query parameter only)."""
    if not _BRANCH.fullmatch(branch) or ".." in branch or branch.startswith(("/", "-")):
        raise ValueError(f"{branch!r} is not a branch name (letters, digits, '.', '_', '-', "
                         "'/')")
    return branch


@dataclass(frozen=True)
class CiResult:
    """The newest run of a workflow on a branch.

    ``conclusion`` is None while the run is not finished; ``status`` is GitHub's run status
    (``completed``, ``in_progress``, ``queued``...), or ``none`` when the branch has no run.
    """

    conclusion: str | None
    status: str
    run_url: str | None
    head_sha: str | None
    created_at: str | None
    repository: str = ""
    workflow: str = ""
    branch: str = ""

    @classmethod
    def none(cls, repository: str, workflow: str, branch: str) -> CiResult:
        return cls(None, "none", None, None, None, repository, workflow, branch)

    @property
    def green(self) -> bool:
        """True only for a completed, successful run."""
        return self.status == "completed" and self.conclusion == "success"

    @property
    def finished(self) -> bool:
        return self.status == "completed"

    def describe(self) -> str:
        """``CI owner/repo deploy.yml on main: success (abc1234, 2026-12-01T10:00:00Z) <url>``."""
        where = f"CI {self.repository} {self.workflow} on {self.branch}"
        if self.status == "none":
            return f"{where}: no run found"
        outcome = self.conclusion if self.finished and self.conclusion else self.status
        details = ", ".join(x for x in ((self.head_sha or "")[:7], self.created_at or "") if x)
        text = f"{where}: {outcome}"
        if details:
            text += f" ({details})"
        if self.run_url:
            text += f" {self.run_url}"
        return text


class GitHubActionsStatus:
    """Reads workflow runs from the GitHub REST API with one ``httpx.Client``.

    ``api_url`` is ``https://api.github.com`` or a GitHub Enterprise ``https://host/api/v3``;
    ``token`` (optional for public repositories) is sent as ``Authorization: Bearer``;
    ``transport`` replaces the network in tests; ``clock`` (seconds since the epoch) turns
    ``X-RateLimit-Reset`` into a wait. Proxies from the environment are not used.
    """

    def __init__(
        self,
        api_url: str = DEFAULT_API_URL,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
        *,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not re.match(r"^https?://[^\s/]+", api_url):
            raise ValueError(f"{api_url!r} is not an http(s) URL")
        headers = {"Accept": "application/vnd.github+json",
                   "X-GitHub-Api-Version": API_VERSION, "User-Agent": USER_AGENT}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._clock = clock
        self._client = httpx.Client(base_url=api_url.rstrip("/"), headers=headers,
                                    timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)),
                                    transport=transport, follow_redirects=False,
                                    trust_env=False)

    def latest(self, repository: str, workflow: str, branch: str) -> CiResult:
        """The newest run of ``workflow`` on ``branch``; raises ExternalServiceError."""
        owner, repo = validate_repository(repository)
        workflow = validate_workflow(workflow)
        branch = validate_branch(branch)
        what = f"read the runs of {repository} {workflow} on {branch}"
        path = f"/repos/{owner}/{repo}/actions/workflows/{workflow}/runs"
        try:
            response = self._client.get(path, params={"branch": branch, "per_page": 1})
        except httpx.TimeoutException as exc:
            raise ExternalServiceError(SERVICE, f"{what}: timed out ({type(exc).__name__})",
                                       retryable=True, code="Timeout") from exc
        except httpx.HTTPError as exc:
            raise ExternalServiceError(SERVICE, f"{what}: network error: {exc}",
                                       retryable=True, code=type(exc).__name__) from exc
        if response.status_code != 200:
            raise self._error(response, what)
        try:
            runs = response.json().get("workflow_runs") or []
        except (ValueError, AttributeError) as exc:
            raise ExternalServiceError(SERVICE, f"{what}: the answer is not the expected JSON",
                                       code="BadResponse") from exc
        if not runs:
            return CiResult.none(repository, workflow, branch)
        run: dict[str, Any] = runs[0] if isinstance(runs[0], dict) else {}
        return CiResult(
            conclusion=_text(run.get("conclusion")),
            status=_text(run.get("status")) or "unknown",
            run_url=_text(run.get("html_url")),
            head_sha=_text(run.get("head_sha")),
            created_at=_text(run.get("created_at")),
            repository=repository, workflow=workflow, branch=branch,
        )

    def close(self) -> None:
        """Release the connection pool."""
        self._client.close()

    def __enter__(self) -> GitHubActionsStatus:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _error(self, response: httpx.Response, what: str) -> ExternalServiceError:
        status = response.status_code
        message = _github_message(response)
        remaining = response.headers.get("X-RateLimit-Remaining")
        rate_limited = status == 429 or (status == 403 and (
            remaining == "0" or "Retry-After" in response.headers
            or "rate limit" in message.lower()))
        retryable = rate_limited or status >= 500
        retry_after = self._retry_after(response) if retryable else None
        if rate_limited:
            text = f"{what}: rate limited (HTTP {status}): {message}"
        elif status == 404:
            text = (f"{what}: not found (HTTP 404): the repository or workflow does not exist, "
                    "or the token cannot see it")
        elif status in (401, 403):
            text = f"{what}: no permission (HTTP {status}): {message}"
        else:
            text = f"{what}: HTTP {status}: {message}"
        code = "RateLimited" if rate_limited else f"HTTP{status}"
        return ExternalServiceError(SERVICE, text, retryable=retryable,
                                    retry_after=retry_after, code=code)

    def _retry_after(self, response: httpx.Response) -> float | None:
        value = response.headers.get("Retry-After")
        if value is not None:
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
        reset = response.headers.get("X-RateLimit-Reset")
        if reset is not None and response.headers.get("X-RateLimit-Remaining") == "0":
            try:
                return max(0.0, float(reset) - self._clock())
            except ValueError:
                return None
        return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _github_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])[:200]
    return response.reason_phrase
