"""The pre-migration backup: ``pg_dump`` of the target database to a file.

``pg_dump`` is started with an argv list (never a shell), ``--format=custom`` (restorable with
``pg_restore``, compressed) and ``--no-password`` (it never prompts). The connection string
goes in ``--dbname``, but without its password: the password, if the URL has one, is handed
to the child in ``PGPASSWORD`` so it never shows in the process list. The file is created
``0600`` before pg_dump writes to it (a dump holds every row of the database), and removed
again if the dump fails or is interrupted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from procedures.errors import StepFailure
from procedures.migrations.runner import libpq_url

__all__ = ["DEFAULT_PG_DUMP", "Dump", "PgDump"]

DEFAULT_PG_DUMP = "/usr/bin/pg_dump"
_STDERR_LIMIT = 400


@dataclass(frozen=True)
class Dump:
    """A finished backup."""

    path: Path
    size: int


class PgDump:
    """Runs ``pg_dump`` (``executable``: a path or a name on PATH)."""

    def __init__(self, executable: str | None = None) -> None:
        self.executable = executable or shutil.which("pg_dump") or DEFAULT_PG_DUMP

    def argv(self, url: str, target: Path) -> tuple[list[str], str | None]:
        """The argv and the password (kept out of argv) for dumping ``url`` to ``target``."""
        try:
            params = conninfo_to_dict(libpq_url(url))
        except psycopg.Error as exc:
            raise StepFailure(f"the database URL cannot be parsed: {exc}") from None
        password = params.pop("password", None)
        conninfo = make_conninfo("", **{k: v for k, v in params.items() if v is not None})
        argv = [self.executable, "--format=custom", "--no-password", f"--file={target}",
                f"--dbname={conninfo}"]
        return argv, None if password is None else str(password)

    def dump(self, url: str, target: Path, *, wait: Callable[[], None],
             poll: float = 0.2) -> Dump:
        """Dump ``url`` into ``target`` (which must not exist).

        ``wait`` is called between polls of the child (the step's heartbeat, cancel and
        deadline check); if it raises, pg_dump is killed, the partial file removed and the
        error re-raised.
        """
        argv, password = self.argv(url, target)
        if not Path(self.executable).is_file() or not os.access(self.executable, os.X_OK):
            raise StepFailure(
                f"pg_dump is not available at {self.executable}, so no backup can be taken "
                "and the migration does not run",
                hint="Install the PostgreSQL client tools (e.g. `apt-get install "
                     "postgresql-client`) on the bot's host, in the server's major version.")
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise StepFailure(f"the backup file {target} exists already") from None
        env = None
        if password is not None:
            env = {**os.environ, "PGPASSWORD": password}
        ok = False
        try:
            with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, env=env) as process:
                try:
                    while True:
                        try:
                            _, err = process.communicate(timeout=poll)
                            break
                        except subprocess.TimeoutExpired:
                            wait()
                except BaseException:
                    process.kill()
                    process.communicate()
                    raise
            if process.returncode != 0:
                text = " ".join(err.decode("utf-8", "replace").split())[-_STDERR_LIMIT:]
                raise StepFailure(f"pg_dump failed (exit {process.returncode}): "
                                  f"{text or 'no message'}",
                                  hint="No backup, so the migration does not run.")
            ok = True
            return Dump(target, target.stat().st_size)
        finally:
            if not ok:
                with contextlib.suppress(OSError):
                    target.unlink()
