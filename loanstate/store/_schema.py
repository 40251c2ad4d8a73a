"""The tables of the durable path, and the version of their shape.

Three tables hold everything: ``loanstate_loans`` (one row per loan: its
current status and a version counting its changes), ``loanstate_history``
(one row per change, ``sequence`` 1, 2, 3... per loan with no gap) and
``loanstate_outbox`` (one row per change: what to send, and how sending is
going). ``loanstate_meta`` records :data:`SCHEMA_VERSION`, so a later release
can tell which shape it finds and migrate it.
"""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa

from loanstate.store._dialects import TABLE_OPTIONS, BigId, Key, UtcDateTime

__all__ = ["SCHEMA_VERSION", "history", "loans", "meta", "metadata", "outbox", "pauses"]

#: Bump on every change to the tables below, with a migration from the previous one
#: (loanstate/store/_migrate.py). 2: ``outbox.skipped_at``; the indexes that keep the
#: claim and pruning fast on a large table of delivered rows; ``loanstate_pauses``.
SCHEMA_VERSION: Final = 2

# Every text field of an event is at most 64 characters (see loanstate._events).
_TEXT: Final = 64

metadata: Final = sa.MetaData()

meta: Final = sa.Table(
    "loanstate_meta",
    metadata,
    sa.Column("key", Key(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
    **TABLE_OPTIONS,
)

loans: Final = sa.Table(
    "loanstate_loans",
    metadata,
    sa.Column("loan_apply_no", Key(_TEXT), primary_key=True),
    sa.Column("status", Key(_TEXT), nullable=False),
    # Number of changes so far; every change is a compare-and-set on it.
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("customer_id", Key(_TEXT)),
    sa.Column("institution_loan_no", Key(_TEXT)),
    sa.Column("opened_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    **TABLE_OPTIONS,
)

history: Final = sa.Table(
    "loanstate_history",
    metadata,
    sa.Column("loan_apply_no", Key(_TEXT), primary_key=True),
    sa.Column("sequence", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("before_status", Key(_TEXT), nullable=False),
    sa.Column("after_status", Key(_TEXT), nullable=False),
    sa.Column("change_time", UtcDateTime, nullable=False),
    # The offset change_time was given in, so history returns the event as it was made.
    sa.Column("utc_offset_seconds", sa.Integer, nullable=False),
    sa.Column("request_id", Key(_TEXT), nullable=False, unique=True),
    sa.Column("customer_id", Key(_TEXT)),
    sa.Column("institution_loan_no", Key(_TEXT)),
    sa.Column("recorded_at", UtcDateTime, nullable=False),
    **TABLE_OPTIONS,
)

outbox: Final = sa.Table(
    "loanstate_outbox",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("request_id", Key(_TEXT), nullable=False, unique=True),
    sa.Column("loan_apply_no", Key(_TEXT), nullable=False),
    sa.Column("sequence", sa.Integer, nullable=False),
    # The event's to_dict() as JSON text: portable across the three engines, exact round trip.
    sa.Column("payload", sa.Text, nullable=False),
    # pending -> delivered | parked | skipped; parked -> pending (operator retry) | skipped.
    sa.Column("state", Key(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    sa.Column("first_failed_at", UtcDateTime),
    sa.Column("lease_owner", Key(128)),
    sa.Column("lease_expires_at", UtcDateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("trace_id", Key(128)),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("delivered_at", UtcDateTime),
    # When an operator set the event aside; with delivered_at, what retention counts from.
    sa.Column("skipped_at", UtcDateTime),
    sa.UniqueConstraint("loan_apply_no", "sequence", name="uq_loanstate_outbox_loan_sequence"),
    # The due pending rows, by when they are due (backoff, the lag of the oldest).
    sa.Index("ix_loanstate_outbox_due", "state", "next_attempt_at"),
    # The claim's index: pending rows in id order, so a claim reads only pending rows
    # however many delivered ones the table holds (its ORDER BY id LIMIT walked them all).
    sa.Index("ix_loanstate_outbox_claim", "state", "id"),
    # Retention's index: the oldest delivered rows first, in batches.
    sa.Index("ix_loanstate_outbox_delivered", "state", "delivered_at"),
    **TABLE_OPTIONS,
)

# A dispatcher's pause on a systemic failure, so a console in another process can show it:
# one row per paused worker, deleted when it resumes (see loanstate/store/_pauses.py).
pauses: Final = sa.Table(
    "loanstate_pauses",
    metadata,
    sa.Column("worker_id", Key(128), primary_key=True),
    sa.Column("cause", Key(64), nullable=False),
    sa.Column("remedy", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("since", UtcDateTime, nullable=False),
    sa.Column("reported_at", UtcDateTime, nullable=False),
    **TABLE_OPTIONS,
)
