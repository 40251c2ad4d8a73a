"""A stateful test base that points Hypothesis at *your* servicing code.

Subclass :class:`LoanLifecycleStateMachine`, return a :class:`ServicingAdapter`
from :meth:`~LoanLifecycleStateMachine.make_adapter`, and collect its
``TestCase``. Hypothesis then opens loans and drives random legal and illegal
changes (unknown statuses too) through your code, beside a model that is just
a dict of loan -> status. After every step it checks that:

- every loan's status in your system is the model's;
- a legal change was made (not refused) and an illegal one was refused
  (raised one of :attr:`~LoanLifecycleStateMachine.refusals`) and left no trace;
- what your code notified is exactly the legal changes, in order, per loan
  (same before, after and change time; nothing missing, nothing extra).

A failure shrinks to a short sequence of steps you can paste into a test.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Protocol, runtime_checkable

from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from loanstate._errors import IllegalTransition, LoanStateError
from loanstate._events import LoanChangeEvent
from loanstate._machine import LoanMachine, default_machine
from loanstate.testing._strategies import _GAPS, loan_numbers, statuses, texts, timezones

__all__ = ["DeliveryFaults", "LoanLifecycleStateMachine", "ServicingAdapter"]

_START = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=8)))


@runtime_checkable
class ServicingAdapter(Protocol):
    """How the kit drives your servicing code: four small methods.

    ``open_loan`` registers a loan at the lifecycle's initial status (opening is
    not a change: nothing is notified). ``change`` asks your code to move the
    loan to ``after`` at the instant ``at`` (use it as the change time); it
    raises when your code refuses. ``status`` reads the loan's current status
    from your system of record. ``notified`` returns every event your code has
    notified so far, oldest first (for example an
    :class:`~loanstate.notifiers.InMemoryNotifier`'s ``sent``).
    """

    def open_loan(self, loan_apply_no: str, *, at: datetime) -> None:
        """Register a new loan at the initial status."""
        ...

    def change(self, loan_apply_no: str, *, after: str, at: datetime) -> object:
        """Change the loan's status to ``after`` at ``at``, or raise to refuse."""
        ...

    def status(self, loan_apply_no: str) -> str:
        """The loan's current status, as your system records it."""
        ...

    def notified(self) -> Sequence[LoanChangeEvent]:
        """Every change event notified so far, oldest first."""
        ...


@runtime_checkable
class DeliveryFaults(Protocol):
    """Optional, on top of :class:`ServicingAdapter`: let the kit make deliveries fail.

    ``fail_deliveries(count)`` makes the next ``count`` delivery attempts fail
    as a platform outage would (for example
    ``InMemoryNotifier.fail_next(count)``, which raises
    :class:`~loanstate.TransientDeliveryError`). ``settle()`` ends the
    outage (failures still scripted are dropped) and lets every pending
    delivery complete (run your dispatcher until it is idle); after it, every
    legal change must have been notified. Between settles, what was notified
    may lag behind, but never holds anything extra or out of order.
    """

    def fail_deliveries(self, count: int) -> None:
        """Make the next ``count`` delivery attempts fail transiently."""
        ...

    def settle(self) -> None:
        """End the outage and deliver everything pending (retrying what failed) before returning."""
        ...


class LoanLifecycleStateMachine(RuleBasedStateMachine):
    """Drives a :class:`ServicingAdapter` with random changes and checks it against a model.

    Set :attr:`loan_machine` to your lifecycle (default: the shipped one) and
    :attr:`refusals` to the exceptions that mean "refused" (default: any
    :class:`~loanstate.LoanStateError`); override :meth:`make_adapter`. An
    adapter with a ``close()`` method is closed after each run. An adapter
    that is also a :class:`DeliveryFaults` gets deliveries failed at random
    and must notify every legal change once it has settled: that finds lost
    notifications. Guarded changes are judged by asking
    :meth:`LoanMachine.change` with the loan number and time only.
    """

    #: The lifecycle your code follows; ``None`` means :func:`~loanstate.default_machine`.
    loan_machine: ClassVar[LoanMachine | None] = None
    #: What your code raises to refuse a change (anything else is a failure).
    refusals: ClassVar[tuple[type[BaseException], ...]] = (LoanStateError,)

    loans = Bundle("loans")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The rules that draw statuses are built per subclass, so the drawn
        # values come from *its* lifecycle and the shrunk steps print them
        # plainly (``after='OVERDUE'``), ready to paste into a test.
        super().__init_subclass__(**kwargs)
        machine = cls.loan_machine or default_machine()

        def change(self: LoanLifecycleStateMachine, loan: str, after: str, gap: timedelta, zone: timezone) -> None:
            self._change(loan, after, gap, zone)

        def change_to_unknown_status(
            self: LoanLifecycleStateMachine, loan: str, after: str, gap: timedelta, zone: timezone
        ) -> None:
            self._change(loan, after, gap, zone)

        change.__qualname__ = f"{cls.__qualname__}.change"
        change_to_unknown_status.__qualname__ = f"{cls.__qualname__}.change_to_unknown_status"
        cls.change = rule(loan=cls.loans, after=statuses(machine), gap=_GAPS, zone=timezones())(change)
        cls.change_to_unknown_status = rule(
            loan=cls.loans,
            after=st.sampled_from(("UNKNOWN", "new", "NEW ")).filter(lambda s: s not in machine.statuses) | texts(),
            gap=_GAPS,
            zone=timezones(),
        )(change_to_unknown_status)

    def __init__(self) -> None:
        super().__init__()
        self.lifecycle: LoanMachine = type(self).loan_machine or default_machine()
        self.adapter: ServicingAdapter = self.make_adapter()
        self.faults: DeliveryFaults | None = self.adapter if isinstance(self.adapter, DeliveryFaults) else None
        self.model: dict[str, str] = {}
        self.expected: dict[str, list[tuple[str, str, datetime]]] = {}
        self.clock: datetime = _START

    def make_adapter(self) -> ServicingAdapter:
        """Return a fresh adapter to your code (one per generated run); override this."""
        raise NotImplementedError("override make_adapter() to return a ServicingAdapter for your code")

    def teardown(self) -> None:
        """Close the adapter if it has a ``close()``."""
        close = getattr(self.adapter, "close", None)
        if callable(close):
            close()

    @rule(target=loans, loan_apply_no=loan_numbers())
    def open_loan(self, loan_apply_no: str) -> str:
        """Open a new loan at the initial status."""
        # Drawn numbers repeat (Hypothesis likes simple values); make each loan's own.
        number, suffix = loan_apply_no, 1
        while loan_apply_no in self.model:
            suffix += 1
            loan_apply_no = f"{number[: 60 - len(str(suffix))]}-{suffix}"
        self.adapter.open_loan(loan_apply_no, at=self.clock)
        self.model[loan_apply_no] = self.lifecycle.initial
        self.expected[loan_apply_no] = []
        return loan_apply_no

    def _change(self, loan: str, after: str, gap: timedelta, zone: timezone) -> None:
        self.clock += gap
        at = self.clock.astimezone(zone)
        before = self.model[loan]
        legal = self.lifecycle.is_legal(before, after)
        if legal and self.lifecycle.is_guarded(before, after):
            try:
                sequence = len(self.expected[loan]) + 1
                self.lifecycle.change(loan_apply_no=loan, before=before, after=after, at=at, sequence=sequence)
            except IllegalTransition:
                legal = False
        try:
            self.adapter.change(loan, after=after, at=at)
        except self.refusals as exc:
            if legal:
                raise AssertionError(
                    f"loan {loan!r}: the legal change {before!r} -> {after!r} was refused: {exc!r}"
                ) from exc
            return
        if not legal:
            raise AssertionError(f"loan {loan!r}: the illegal change {before!r} -> {after!r} was accepted")
        self.model[loan] = after
        self.expected[loan].append((before, after, at))

    @invariant()
    def statuses_agree(self) -> None:
        """Every loan's status in the system under test is the model's."""
        for loan, status in self.model.items():
            actual = self.adapter.status(loan)
            assert actual == status, f"loan {loan!r}: the system says {actual!r}, the lifecycle says {status!r}"

    @precondition(lambda self: self.faults is not None)
    @rule(count=st.integers(1, 3))
    def deliveries_fail(self, count: int) -> None:
        """The platform fails the next ``count`` delivery attempts (adapters with DeliveryFaults only)."""
        assert self.faults is not None
        self.faults.fail_deliveries(count)

    @precondition(lambda self: self.faults is not None)
    @rule()
    def settle(self) -> None:
        """Let pending deliveries complete; now every legal change must have been notified."""
        assert self.faults is not None
        self.faults.settle()
        self._check_notified(exact=True)

    @invariant()
    def notified_exactly_the_legal_changes_in_order(self) -> None:
        """Per loan, the notified events are the legal changes made, in order, nothing more.

        With :class:`DeliveryFaults`, deliveries may lag until :meth:`settle`:
        then the notified events need only be the first of the legal changes.
        """
        self._check_notified(exact=self.faults is None)

    def _check_notified(self, *, exact: bool) -> None:
        notified: dict[str, list[tuple[str, str, datetime]]] = {}
        for event in self.adapter.notified():
            notified.setdefault(event.loan_apply_no, []).append(
                (event.before_status, event.after_status, event.change_time)
            )
        for loan in sorted(set(notified) | set(self.expected)):
            got = notified.get(loan, [])
            want = self.expected.get(loan, [])
            if exact:
                assert got == want, (
                    f"loan {loan!r}: notified {_describe(got)}, but the legal changes made were {_describe(want)}"
                )
            else:
                assert got == want[: len(got)], (
                    f"loan {loan!r}: notified {_describe(got)}, which is not a beginning of the legal changes "
                    f"made, {_describe(want)}"
                )


def _describe(changes: Sequence[tuple[str, str, datetime]]) -> str:
    if not changes:
        return "nothing"
    return "[" + ", ".join(f"{b} -> {a} at {t.isoformat()}" for b, a, t in changes) + "]"
