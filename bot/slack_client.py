"""The bot's Web API client, built in one place (the composition root, ``/qlp doctor``)."""

from __future__ import annotations

from typing import Any

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler
from slack_sdk.web import SlackResponse

from bot.metrics import ObservedWebClient
from procedures import tracing

__all__ = ["TracedWebClient", "make_web_client"]


class TracedWebClient(ObservedWebClient):
    """Counted (:class:`bot.metrics.ObservedWebClient`) and traced: a client span per Web API
    call (``slack <method>``), in the trace of the deployment the caller's scope is about
    (:mod:`procedures.tracing`). Nothing more than a ``None`` test when tracing is off."""

    def api_call(self, api_method: str, *args: Any, **kwargs: Any) -> SlackResponse:
        with tracing.span(f"slack {api_method}", tracing.SpanKind.CLIENT,
                          slack_method=api_method):
            return super().api_call(api_method, *args, **kwargs)


def make_web_client(token: str, api_url: str) -> WebClient:
    """The one Web API client: pointed at ``SLACK_API_URL``, retrying connection errors.

    429s are not retried here: the outbox sender honours ``Retry-After`` itself, so a rate limit
    never puts a thread to sleep.
    """
    return TracedWebClient(token=token, base_url=api_url, timeout=10,  # counts its calls
                           retry_handlers=[ConnectionErrorRetryHandler(max_retry_count=2)])
