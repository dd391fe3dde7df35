"""The retry budget token bucket on its own."""

from __future__ import annotations

from kvclient._budget import CAPACITY, DEPOSIT, REFILL_PER_SECOND, RetryBudget


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_chosen_parameters() -> None:
    """The budget holds 10 tokens, earns 0.1 per call and refills 1 per second."""
    assert (CAPACITY, DEPOSIT, REFILL_PER_SECOND) == (10.0, 0.1, 1.0)


def test_full_bucket_allows_capacity_retries_then_refuses() -> None:
    """A fresh budget pays for `capacity` retries and then refuses without going negative."""
    budget = RetryBudget(clock=Clock())
    assert [budget.try_spend() for _ in range(11)] == [True] * 10 + [False]
    assert budget.tokens == 0.0


def test_calls_earn_retries_back() -> None:
    """Ten logical calls deposit enough for one more retry."""
    budget = RetryBudget(capacity=5.0, clock=Clock())
    while budget.try_spend():
        pass
    for _ in range(10):
        budget.record_call()
    assert budget.try_spend()
    assert not budget.try_spend()


def test_time_refills_the_bucket_up_to_capacity() -> None:
    """An empty bucket regains one token per second, never more than its capacity."""
    clock = Clock()
    budget = RetryBudget(capacity=3.0, clock=clock)
    while budget.try_spend():
        pass
    clock.now = 1.5
    assert budget.tokens == 1.5
    clock.now = 100.0
    assert budget.tokens == 3.0
    assert budget.record_call() == 3.0
