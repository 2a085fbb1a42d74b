"""The local shell: a terminal stand-in for Slack that drives the same Bolt app as production.

``slack_standin`` serves the part of Slack's Web API the bot calls (and ``response_url`` sinks)
on 127.0.0.1; ``render`` turns the Block Kit it receives into terminal text with numbered
buttons.
"""
