"""Timed work: the leased scheduler, window and lock reminders, scheduled deployments."""
