"""What the data layer raises; the HTTP layer decides how each one looks to a client.

Outcomes a client asked about (a missing item, a stale version) are not errors: they are the
`Status` of an `Outcome` (app/store/records.py).
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of everything the store raises on purpose."""


class DatabaseUnavailable(StoreError):
    """The database did not answer in time or refused the connection (503, retry later).

    Nothing was applied, unless it is a CommitUnconfirmed.
    """


class DatabaseBusy(DatabaseUnavailable):
    """Every database thread is busy and the queue is full: refused without waiting."""


class TransactionConflict(DatabaseUnavailable):
    """The database rolled the transaction back to resolve a conflict with another (a deadlock,
    a serialization failure); running it again may well succeed."""


class CommitUnconfirmed(DatabaseUnavailable):
    """The COMMIT was sent but not confirmed in time: the write may or may not have been applied.

    The one 503 that does not mean "not applied"; a retry with the same Idempotency-Key is safe.
    """
