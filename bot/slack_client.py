"""The bot's Web API client, built in one place (the composition root, ``/qlp doctor``)."""

from __future__ import annotations

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler

from bot.metrics import ObservedWebClient

__all__ = ["make_web_client"]


def make_web_client(token: str, api_url: str) -> WebClient:
    """The one Web API client: pointed at ``SLACK_API_URL``, retrying connection errors.

    429s are not retried here: the outbox sender honours ``Retry-After`` itself, so a rate limit
    never puts a thread to sleep.
    """
    return ObservedWebClient(token=token, base_url=api_url, timeout=10,  # counts its calls
                             retry_handlers=[ConnectionErrorRetryHandler(max_retry_count=2)])
