"""Tests of the Azure platform: the real SDK clients against a local ARM double over HTTPS."""
