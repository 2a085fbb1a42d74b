"""The Slack side and the process: Bolt app, grammar, Block Kit, the local shell, the CLI."""
