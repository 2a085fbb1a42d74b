"""Fakes for tests: real classes with real behaviour, not ``MagicMock`` trees."""
