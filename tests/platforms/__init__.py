"""Tests of the platforms (local processes, Azure against a local ARM double)."""
