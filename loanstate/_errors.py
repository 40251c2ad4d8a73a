"""The exceptions loanstate raises.

Every error is a :class:`LoanStateError`, so one ``except`` clause catches
anything the library raises on purpose; anything else is a bug.

.. code-block:: text

    LoanStateError
    ├── InvalidDefinition        a lifecycle definition has problems (all listed)
    ├── IllegalTransition        before -> after is not a legal change
    ├── InvalidEvent             a change event's field is missing or malformed
    ├── UnreadableInput          an input file cannot be read (missing, a directory, binary, ...)
    ├── UnknownLoan              the store holds no loan with that loan_apply_no
    ├── ConcurrentChange         the loan changed under us (lost race, stale status)
    ├── InvalidConfiguration     a setting is wrong (a sign method, an http:// URL, ...)
    └── DeliveryError            a notification did not reach the platform
        ├── TransientDeliveryError   try again later, with the same request_id
        │   └── SystemicDeliveryError    our setup is wrong (credentials, clock, TLS, ...):
        │                                every event would fail alike, so pause, never park
        └── PermanentDeliveryError   retrying unchanged cannot help: park it

Messages name the offending value, shortened by :func:`shorten` to a readable
length (a 1 MB value never makes a 1 MB message); attributes carry it whole for
code. No error ever holds a secret (an app secret, a signature): notifiers strip
them before raising.

This module imports nothing from loanstate: every other module may import it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import attrs

__all__ = [
    "ConcurrentChange",
    "DeliveryError",
    "IllegalTransition",
    "InvalidConfiguration",
    "InvalidDefinition",
    "InvalidEvent",
    "LoanStateError",
    "PermanentDeliveryError",
    "Problem",
    "SystemicDeliveryError",
    "TransientDeliveryError",
    "UnknownLoan",
    "UnreadableInput",
    "shorten",
]

#: How many characters of a value's ``repr`` a message quotes before cutting it short.
SHORT_VALUE: Final = 60


def shorten(value: object, limit: int = SHORT_VALUE) -> str:
    """The ``repr`` of ``value`` for a message: at most about ``limit`` characters, never raising.

    A longer value is cut and says how long it was; control characters are
    escaped (as ``repr`` does), so a message stays one readable line. A value
    whose ``repr`` fails (a hostile object, a structure nested too deeply, an
    integer too long to print) is named by its type instead.
    """
    # Strings and bytes are read through their base types: a subclass's own
    # methods (which may raise) are never called, and a huge one is cut
    # before quoting (repr would build all of it first).
    if isinstance(value, str):
        text = str.__str__(value)
        if len(text) > limit:
            return f"{text[:limit]!r}... ({len(text)} characters)"
        return repr(text)
    if isinstance(value, bytes | bytearray):
        raw = memoryview(value)
        if raw.nbytes > limit:
            return f"{bytes(raw[:limit])!r}... ({raw.nbytes} bytes)"
        return repr(bytes(raw))
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__} object>"
    if not isinstance(text, str):
        return f"<{type(value).__name__} object>"
    if len(text) > limit:
        return f"{text[:limit]}... ({len(text)} characters of {type(value).__name__})"
    return text


@attrs.frozen
class Problem:
    """One mistake in a lifecycle definition: what is wrong, and where.

    ``code`` is a stable identifier for programs (``unknown-status``,
    ``unreachable``, ``dead-end``, ``terminal-exit``, ``duplicate-pair``,
    ``self-loop``, ``blank-name``, ``bad-name``, ``unknown-key``,
    ``bad-initial``, ``ambiguous-trigger``, ``bad-value``, ``unreadable``);
    ``where`` is the place in the definition (``transitions[2].after``);
    ``source`` and ``line`` locate it in a file when there is one.
    """

    code: str
    message: str
    where: str = ""
    source: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        place = ""
        if self.source:
            place = f"{self.source}:{self.line}: " if self.line else f"{self.source}: "
        where = f"{self.where}: " if self.where else ""
        return f"{place}{where}{self.message}"


class LoanStateError(Exception):
    """Root of every error loanstate raises on purpose."""


class InvalidDefinition(LoanStateError):
    """A lifecycle definition has problems; ``problems`` lists every one of them."""

    def __init__(self, problems: Sequence[Problem], source: str | None = None) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"invalid lifecycle definition{where}: {count} {noun}\n{lines}")


class IllegalTransition(LoanStateError):
    """``before -> after`` is not a legal change for this lifecycle.

    ``allowed`` is the set of statuses that *are* legal after ``before``.
    """

    def __init__(
        self,
        before: str,
        after: str,
        allowed: Iterable[str],
        *,
        loan_apply_no: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.before = before
        self.after = after
        self.allowed: frozenset[str] = frozenset(allowed)
        self.loan_apply_no = loan_apply_no
        self.reason = reason
        loan = f" for loan {shorten(loan_apply_no)}" if loan_apply_no else ""
        why = reason or "not a legal transition"
        options = ", ".join(sorted(self.allowed)) or "none (no way out)"
        was = shorten(before)
        super().__init__(f"{was} -> {shorten(after)}{loan}: {why}; allowed after {was}: {options}")


class InvalidEvent(LoanStateError):
    """A change event, or the input it was built from, is malformed.

    ``errors`` maps each bad field to what is wrong with it (each message
    quotes the bad value through :func:`shorten`).
    """

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = dict(errors)
        detail = "; ".join(f"{field}: {msg}" for field, msg in self.errors.items())
        super().__init__(f"invalid change event: {detail}")


class UnknownLoan(LoanStateError):
    """The store holds no loan with this ``loan_apply_no``."""

    def __init__(self, loan_apply_no: str) -> None:
        self.loan_apply_no = loan_apply_no
        super().__init__(f"unknown loan {shorten(loan_apply_no)}: open it first")


class UnreadableInput(LoanStateError):
    """A file given as input cannot be read as what it should be.

    ``path`` names the file and ``reason`` says what is wrong with it (missing,
    a directory, binary, not in the expected encoding, lacking a header, ...).
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ConcurrentChange(LoanStateError):
    """The loan's status was not what the change assumed.

    Another writer won the race, or ``expected_before`` is stale. Nothing was
    written; read the status again and decide.
    """

    def __init__(self, loan_apply_no: str, *, expected: str | None, actual: str | None) -> None:
        self.loan_apply_no = loan_apply_no
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"loan {shorten(loan_apply_no)} changed concurrently: expected status {shorten(expected)}, "
            f"found {shorten(actual)}; nothing was written"
        )


class InvalidConfiguration(LoanStateError):
    """A setting is wrong; ``setting`` names it and ``value`` holds it (never a secret)."""

    def __init__(self, setting: str, value: object, problem: str) -> None:
        self.setting = setting
        self.value = value
        super().__init__(f"invalid {setting} {shorten(value)}: {problem}")


class DeliveryError(LoanStateError):
    """A change notification did not reach the platform.

    Attributes keep what the gateway said, never the credentials used:
    ``request_id`` (the idempotency key), ``trace_id``, ``code``/``code_message``
    and ``sub_code``/``sub_message`` (platform level: the reply's ``code``, ``msg``,
    ``sub_code`` and ``sub_msg``), ``response_code``/``response_message`` (business
    level), ``http_status`` and ``retry_after`` (seconds to wait, where the platform
    implies a window). ``message`` is this error's own text, the one ``str()`` shows.
    """

    def __init__(
        self,
        message: str,
        *,
        request_id: str | None = None,
        trace_id: str | None = None,
        code: str | None = None,
        code_message: str | None = None,
        sub_code: str | None = None,
        sub_message: str | None = None,
        response_code: str | None = None,
        response_message: str | None = None,
        http_status: int | None = None,
        gateway_request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.request_id = request_id
        self.trace_id = trace_id
        self.code = code
        self.code_message = code_message
        self.sub_code = sub_code
        self.sub_message = sub_message
        self.response_code = response_code
        self.response_message = response_message
        self.http_status = http_status
        self.gateway_request_id = gateway_request_id
        self.retry_after = retry_after
        where = f" (request_id={request_id!r})" if request_id else ""
        super().__init__(f"{message}{where}")

    @property
    def message(self) -> str:
        """The human-readable text this error was raised with."""
        return str(self.args[0]) if self.args else ""


class TransientDeliveryError(DeliveryError):
    """Delivery failed for a reason that may pass: retry with the same request_id.

    ``retry_after`` is the wait in seconds the platform implies (a rate limit
    window), or ``None`` to use the caller's backoff.
    """


class PermanentDeliveryError(DeliveryError):
    """The platform refused the notification; sending it unchanged cannot help."""


class SystemicDeliveryError(TransientDeliveryError):
    """Delivery failed for a reason that says nothing about this event and
    everything about our setup, so every event would fail alike: a rejected
    signature or app key, a missing permission, a clock the platform refuses,
    HTTP 401/403, a TLS failure, a gateway that cannot be reached.

    A dispatcher pauses on it (parks nothing, charges no attempt) and probes
    until it passes. ``cause`` is a short stable name for what is wrong (such as
    ``"signature"``, ``"app_key"``, ``"permission"``, ``"timestamp"``, ``"tls"``,
    ``"unreachable"``); ``remedy`` says, for a person, what to fix.
    """

    def __init__(self, message: str, *, cause: str, remedy: str, **details: Any) -> None:
        self.cause = cause
        self.remedy = remedy
        super().__init__(message, **details)
