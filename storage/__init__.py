"""The bot's own persistence: SQLModel tables, repositories, the outbox and the audit chain.

Only this package imports ``sqlmodel``, ``sqlalchemy`` and ``alembic``. Everything is built
from a :class:`storage.db.Database` that the composition root creates from a URL; there is no
module-level engine. Repositories implement the protocols in :mod:`procedures.store`.
"""
