"""What keying the audit chain costs: appends and ``verify`` with HMAC-SHA256 vs plain SHA-256.

    python benchmarks/audit_chain.py [--rows 20000]

Prints figures; asserts nothing. On a temporary SQLite file (migrated), ``--rows`` audit rows
are appended through the group-committed log the bot uses (``record``, a flush every 1000),
once unkeyed (the chain as it was) and once keyed (``QLP_AUDIT_KEY``), and the whole chain is
then verified: rows per second of each, and the keyed/plain ratio.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from procedures.clock import SystemClock
from storage.audit import AuditKey, AuditKeyring, AuditLog
from storage.audit_group import GroupCommitAuditLog
from storage.db import Database
from storage.migrate import upgrade


def _measure(rows: int, keyring: AuditKeyring | None) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        database = Database(f"sqlite:///{Path(tmp) / 'bench.db'}")
        try:
            upgrade(database)
            clock = SystemClock()
            audit = AuditLog(database, clock, keyring)
            group = GroupCommitAuditLog(audit, database, clock)
            started = time.perf_counter()
            for n in range(rows):
                group.record(f"U{n % 50:04d}", "command", environment="production",
                             detail={"text": f"/qlp status {n}"})
                if n % 1000 == 999:  # stay far below the queue's bound (MAX_QUEUED)
                    group.flush(timeout=600)
            group.flush(timeout=600)
            appended = time.perf_counter() - started
            group.close()
            started = time.perf_counter()
            result = audit.verify()
            verified = time.perf_counter() - started
            assert result.ok and result.checked == rows, result
            return rows / appended, rows / verified
        finally:
            database.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    rows = parser.parse_args().rows
    plain = _measure(rows, None)
    keyed = _measure(rows, AuditKeyring(AuditKey.of(secrets.token_hex(32))))
    print(f"audit chain, {rows} rows on SQLite (group-committed appends, then verify):")
    for name, (append, verify) in (("plain SHA-256", plain), ("HMAC-SHA256", keyed)):
        print(f"  {name:14s} append {append:9.0f} rows/s   verify {verify:9.0f} rows/s")
    print(f"  keyed / plain: append {keyed[0] / plain[0]:.2f}x, verify {keyed[1] / plain[1]:.2f}x")


if __name__ == "__main__":
    main()
