"""Tests of database migrations: files, the runner, the playbook and ``/qlp migrate``."""
