"""The domain: policy, windows, the engine, playbooks, and ports to the outside world.

Nothing here imports Slack, a database library or a cloud SDK (only
``procedures.platforms.azure*`` may import ``azure``); import-linter keeps it so.
"""
