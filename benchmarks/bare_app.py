"""A bare Bolt app that only acks ``/qlp``, served like ``qlp-bot serve`` (waitress, 16 threads).

The reference point of ``benchmarks/ack.py``: ``python benchmarks/bare_app.py PORT SECRET``.
"""

from __future__ import annotations

import sys

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_bolt.authorization import AuthorizeResult
from waitress import serve


def main() -> None:
    port, secret = int(sys.argv[1]), sys.argv[2]
    app = App(signing_secret=secret, token_verification_enabled=False,
              authorize=lambda **_: AuthorizeResult(enterprise_id=None, team_id=None,
                                                    bot_token="xoxb-bare"))
    app.command("/qlp")(lambda ack: ack())
    serve(SlackRequestHandler(app), host="127.0.0.1", port=port, threads=16, _quiet=True)


if __name__ == "__main__":
    main()
