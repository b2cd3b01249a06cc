"""What a database call can raise besides SQL's own errors, and telling a database that is away (down,
restarting, unreachable, locked by another process) from a statement that is wrong: the first is worth trying
again once the database is back, the second never is."""

from __future__ import annotations

import sqlalchemy as sa

# SQLSTATE classes of a server that cannot serve now: connection exceptions (08), insufficient resources
# (53: too many connections, out of memory or disk), operator intervention (57: shutting down, not accepting
# connections, the connection ended by an administrator), and a transaction that had to be rolled back (40:
# serialization failure, deadlock).
_AWAY_CLASSES = ("08", "53", "57", "40")


def unavailable(e: BaseException) -> bool:
    """Whether `e`, raised by a Store call, means the database could not be used just then."""
    if isinstance(e, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError, OSError, TimeoutError)):
        return True  # (on SQLite: a locked, read-only or missing file; on PostgreSQL: a lost connection)
    if isinstance(e, sa.exc.DBAPIError):
        if e.connection_invalidated or e.statement is None:  # the connection died, or none could be made
            return True
        code = getattr(e.orig, "sqlstate", None) or getattr(e.orig, "pgcode", None)
        return isinstance(code, str) and code[:2] in _AWAY_CLASSES
    return False


class LeaseLost(Exception):
    """The job is no longer held under the caller's lease: another claim took it (the lease ran out), or it
    was given back. Nothing was written."""


class DuplicateJob(Exception):
    """This Slack message or command was accepted before."""


class TooManyPending(Exception):
    """The user already has as many requests waiting or running as allowed."""
