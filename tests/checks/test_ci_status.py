"""GitHubActionsStatus against a real local HTTP server playing the GitHub REST API."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from procedures.checks.ci_status import (
    CiResult,
    GitHubActionsStatus,
    validate_repository,
    validate_workflow,
)
from procedures.checks.http import HttpChecker
from procedures.clock import FixedClock
from procedures.errors import ExternalServiceError, StepFailure
from procedures.model import Slot
from procedures.playbooks.standard import FinalChecks, StandardSteps
from tests.fakes.platform import FakePlatform
from tests.fakes.policies import BASE, make_policy
from tests.playbooks.test_standard_failures import ZeroErrors
from tests.playbooks.test_standard_steps import StepRunner

TOKEN = "ghp-test-token"


class GitHubDouble:
    """Runs per (owner/repo, workflow, branch); records each request's path, query, headers."""

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.answer: tuple[int, dict[str, Any], dict[str, str]] | None = None

    def handle(self, raw_path: str, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.requests.append((parts.path, query, headers))
        if self.answer is not None:
            return self.answer
        segments = parts.path.split("/")
        # /repos/{owner}/{repo}/actions/workflows/{workflow}/runs
        if (len(segments) != 8 or segments[1] != "repos" or segments[4:6] != ["actions",
                                                                               "workflows"]
                or segments[7] != "runs"):
            return 404, {"message": "Not Found"}, {}
        key = (f"{segments[2]}/{segments[3]}", segments[6], query.get("branch", ""))
        if (key[0], key[1]) not in {(r, w) for r, w, _ in self.runs}:
            return 404, {"message": "Not Found"}, {}
        runs = self.runs.get(key, [])
        return 200, {"total_count": len(runs), "workflow_runs": runs[:1]}, {}


def run(status: str, conclusion: str | None, number: int = 7) -> dict[str, Any]:
    return {"id": 1000 + number, "status": status, "conclusion": conclusion,
            "html_url": f"https://github.com/acme/shop/actions/runs/{1000 + number}",
            "head_sha": "abc1234def5678", "created_at": "2026-12-01T10:00:00Z"}


@pytest.fixture
def github() -> Iterator[tuple[GitHubDouble, str]]:
    double = GitHubDouble()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, body, extra = double.handle(self.path, headers)
            payload = json.dumps(body).encode()
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield double, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def checker(url: str, token: str | None = TOKEN) -> GitHubActionsStatus:
    return GitHubActionsStatus(url, token, timeout=2.0, clock=lambda: 1_000.0)


def test_a_successful_run_is_green_and_the_request_is_githubs(
        github: tuple[GitHubDouble, str]) -> None:
    double, url = github
    double.runs[("acme/shop", "deploy.yml", "main")] = [run("completed", "success")]
    with checker(url) as ci:
        result = ci.latest("acme/shop", "deploy.yml", "main")
    assert result.green and result.finished
    assert result.conclusion == "success"
    assert result.head_sha == "abc1234def5678"
    assert result.run_url == "https://github.com/acme/shop/actions/runs/1007"
    assert result.describe() == ("CI acme/shop deploy.yml on main: success "
                                 "(abc1234, 2026-12-01T10:00:00Z) "
                                 "https://github.com/acme/shop/actions/runs/1007")
    path, query, headers = double.requests[-1]
    assert path == "/repos/acme/shop/actions/workflows/deploy.yml/runs"
    assert query == {"branch": "main", "per_page": "1"}
    assert headers["accept"] == "application/vnd.github+json"
    assert headers["x-github-api-version"] == "2022-11-28"
    assert headers["authorization"] == f"Bearer {TOKEN}"


def test_a_failed_run_is_not_green(github: tuple[GitHubDouble, str]) -> None:
    double, url = github
    double.runs[("acme/shop", "deploy.yml", "main")] = [run("completed", "failure")]
    result = checker(url).latest("acme/shop", "deploy.yml", "main")
    assert not result.green
    assert result.conclusion == "failure"
    assert "main: failure" in result.describe()


def test_a_run_in_progress_has_no_conclusion_yet(github: tuple[GitHubDouble, str]) -> None:
    double, url = github
    double.runs[("acme/shop", "123456", "release/1.2")] = [run("in_progress", None)]
    result = checker(url, token=None).latest("acme/shop", "123456", "release/1.2")
    assert not result.green and not result.finished
    assert (result.status, result.conclusion) == ("in_progress", None)
    assert "release/1.2: in_progress" in result.describe()
    _, query, headers = double.requests[-1]
    assert query["branch"] == "release/1.2"
    assert "authorization" not in headers


def test_a_branch_without_runs_is_a_result_not_an_error(
        github: tuple[GitHubDouble, str]) -> None:
    double, url = github
    double.runs[("acme/shop", "deploy.yml", "main")] = [run("completed", "success")]
    result = checker(url).latest("acme/shop", "deploy.yml", "feature-x")
    assert result == CiResult.none("acme/shop", "deploy.yml", "feature-x")
    assert not result.green
    assert result.describe().endswith("feature-x: no run found")


def test_an_unknown_workflow_is_a_404_that_is_not_retryable(
        github: tuple[GitHubDouble, str]) -> None:
    _, url = github
    with pytest.raises(ExternalServiceError) as caught:
        checker(url).latest("acme/shop", "missing.yml", "main")
    assert not caught.value.retryable
    assert caught.value.code == "HTTP404"
    assert "not found (HTTP 404)" in caught.value.message
    assert caught.value.service == "GitHub"


def test_a_403_rate_limit_is_retryable_after_retry_after(
        github: tuple[GitHubDouble, str]) -> None:
    double, url = github
    double.answer = (403, {"message": "API rate limit exceeded for 127.0.0.1."},
                     {"Retry-After": "60", "X-RateLimit-Remaining": "0"})
    with pytest.raises(ExternalServiceError) as caught:
        checker(url).latest("acme/shop", "deploy.yml", "main")
    error = caught.value
    assert error.retryable and error.retry_after == 60.0
    assert error.code == "RateLimited"
    assert "rate limited (HTTP 403): API rate limit exceeded" in error.message


def test_a_403_rate_limit_with_only_a_reset_time_waits_until_then(
        github: tuple[GitHubDouble, str]) -> None:
    double, url = github
    double.answer = (403, {"message": "API rate limit exceeded"},
                     {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1090"})
    with pytest.raises(ExternalServiceError) as caught:
        checker(url).latest("acme/shop", "deploy.yml", "main")
    assert caught.value.retryable and caught.value.retry_after == 90.0


def test_a_403_without_rate_limit_is_no_permission(github: tuple[GitHubDouble, str]) -> None:
    double, url = github
    double.answer = (403, {"message": "Resource not accessible by integration"}, {})
    with pytest.raises(ExternalServiceError) as caught:
        checker(url).latest("acme/shop", "deploy.yml", "main")
    assert not caught.value.retryable
    assert "no permission (HTTP 403)" in caught.value.message


def test_a_server_error_is_retryable(github: tuple[GitHubDouble, str]) -> None:
    double, url = github
    double.answer = (502, {"message": "Server Error"}, {})
    with pytest.raises(ExternalServiceError) as caught:
        checker(url).latest("acme/shop", "deploy.yml", "main")
    assert caught.value.retryable and caught.value.retry_after is None


def test_nothing_listening_is_a_retryable_network_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ExternalServiceError) as caught:
        checker(f"http://127.0.0.1:{port}").latest("acme/shop", "deploy.yml", "main")
    assert caught.value.retryable
    assert "network error" in caught.value.message


@pytest.mark.parametrize("repository", [
    "acme", "acme/shop/extra", "../etc", "acme/..", "acme/shop?x=1", "acme/sh op",
    "acme/shop#frag", "acme/%2e%2e", "",
])
def test_repositories_that_could_change_the_path_are_refused(repository: str) -> None:
    with pytest.raises(ValueError, match="not a GitHub repository"):
        validate_repository(repository)


@pytest.mark.parametrize("workflow", [
    "../../user", "deploy", "deploy.yml/../x", ".yml", "deploy.yml?x=1", "12a", "",
])
def test_workflows_that_are_neither_a_file_nor_an_id_are_refused(workflow: str) -> None:
    with pytest.raises(ValueError, match="not a workflow"):
        validate_workflow(workflow)


def test_bad_names_never_reach_the_server(github: tuple[GitHubDouble, str]) -> None:
    double, url = github
    with pytest.raises(ValueError):
        checker(url).latest("acme/../../admin", "deploy.yml", "main")
    with pytest.raises(ValueError):
        checker(url).latest("acme/shop", "deploy.yml", "main&per_page=100")
    assert double.requests == []
    assert validate_repository("my-org.io/shop_v2") == ("my-org.io", "shop_v2")
    assert validate_workflow("ci-deploy.yaml") == "ci-deploy.yaml"


# -- final_validation with a `ci:` section ---------------------------------------------------


def ci_context(url: str, *, live: bool = True, token_env: str = "GITHUB_TOKEN",
               slow: dict[str, Any] | None = None) -> StepRunner:
    """A StepRunner (tests.playbooks) on a FakePlatform whose production has a ci section."""
    production = dict(BASE["environments"]["production"])
    production["ci"] = {"repository": "acme/shop", "workflow": "deploy.yml", "branch": "main",
                        "api_url": url, "token_env": token_env}
    production.update(slow or {})
    policy = make_policy(environments={"production": production})
    platform = FakePlatform(live=Slot.BLUE if live else None)
    return StepRunner(platform, ZeroErrors(), policy,
                      FixedClock(datetime(2026, 12, 1, 11, 0, tzinfo=UTC)), "2.0.0")


def final_validation(url: str) -> Callable[[StepRunner], Mapping[str, Any]]:
    healthy = httpx.MockTransport(lambda request: httpx.Response(200, json={"ok": True}))
    steps = StandardSteps(HttpChecker(transport=healthy),
                          FinalChecks(tokens={"GITHUB_TOKEN": TOKEN}))
    return lambda ctx: steps.final_validation(ctx) or {}


def test_final_validation_reports_a_green_ci_run(github: tuple[GitHubDouble, str]) -> None:
    double, url = github
    double.runs[("acme/shop", "deploy.yml", "main")] = [run("completed", "success")]
    ctx = ci_context(url)
    result = final_validation(url)(ctx)
    assert result["ci"]["conclusion"] == "success"
    assert any(line.startswith("CI acme/shop deploy.yml on main: success") for line in
               ctx.reports)
    assert double.requests[-1][2]["authorization"] == f"Bearer {TOKEN}"


def test_final_validation_runs_ci_on_a_first_deployment_too(
        github: tuple[GitHubDouble, str]) -> None:
    double, url = github
    double.runs[("acme/shop", "deploy.yml", "main")] = [run("completed", "failure")]
    with pytest.raises(StepFailure, match=r"CI is not green: .*main: failure") as failure:
        final_validation(url)(ci_context(url, live=False))
    assert not failure.value.retryable


def test_final_validation_fails_while_ci_still_runs(github: tuple[GitHubDouble, str]) -> None:
    double, url = github
    double.runs[("acme/shop", "deploy.yml", "main")] = [run("in_progress", None)]
    with pytest.raises(StepFailure, match="CI is not green") as failure:
        final_validation(url)(ci_context(url))
    assert failure.value.retryable  # the run may still succeed
    assert "it is in_progress" in (failure.value.hint or "")


def test_final_validation_is_inconclusive_when_github_cannot_answer(
        github: tuple[GitHubDouble, str]) -> None:
    double, url = github
    double.answer = (403, {"message": "API rate limit exceeded"},
                     {"Retry-After": "30", "X-RateLimit-Remaining": "0"})
    ctx = ci_context(url, token_env="OTHER_TOKEN")
    with pytest.raises(StepFailure, match=r"inconclusive: GitHub: .*rate limited") as failure:
        final_validation(url)(ctx)
    assert failure.value.retryable
    assert any("inconclusive" in line for line in ctx.reports)
    assert "authorization" not in double.requests[-1][2]  # OTHER_TOKEN: no token given
    double.answer = None
    with pytest.raises(StepFailure, match=r"inconclusive: .*not found \(HTTP 404\)") as missing:
        final_validation(url)(ci_context(url))
    assert not missing.value.retryable
