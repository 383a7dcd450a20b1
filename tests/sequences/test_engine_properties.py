"""Property-based tests of `decide`: random definitions driven through time like the app would."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from sequences import Arrival
from sequences import Complete
from sequences import Condition
from sequences import ConditionStep
from sequences import Decision
from sequences import Definition
from sequences import DelayStep
from sequences import EmailStep
from sequences import EnrolmentState
from sequences import Exit
from sequences import Position
from sequences import Schedule
from sequences import SendEmail
from sequences import WaitStep
from sequences import decide
from sequences import start

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
durations = st.sampled_from([timedelta(seconds=1), timedelta(minutes=5), timedelta(hours=1)])
branches = st.sampled_from(["continue", "exit"])
flag = Condition("contact.properties.flag", "equals", True)
steps = st.one_of(
    st.builds(EmailStep, st.sampled_from(["a", "b", "c"])),
    st.builds(DelayStep, durations),
    st.builds(ConditionStep, st.just(flag), branches, branches),
    st.builds(WaitStep, st.just("e"), durations, st.just(()), branches, branches),
)
definitions = st.builds(
    Definition,
    steps=st.lists(steps, min_size=1, max_size=8).map(tuple),
    exit_conditions=st.sampled_from([(), (Condition("contact.properties.stop", "exists"),)]),
)
contacts = st.fixed_dictionaries(
    {
        "email": st.just("a@example.com"),
        "properties": st.fixed_dictionaries({"flag": st.booleans()}),
    }
)
# Each tick: how far the clock moves, and whether an `e` event arrives at that moment.
ticks = st.lists(
    st.tuples(st.integers(0, 4000).map(lambda s: timedelta(seconds=s)), st.booleans()),
    max_size=30,
)


def state(
    position: Position, contact: dict[str, object], arrival: Arrival | None
) -> EnrolmentState:
    return EnrolmentState(position.step_index, position.at, contact, None, arrival)


@given(definition=definitions, contact=contacts, ticks=ticks)
def test_driving_an_enrolment_through_time(
    definition: Definition, contact: dict[str, object], ticks: list[tuple[timedelta, bool]]
) -> None:
    position, now = start(definition, T0), T0
    sent: list[int] = []
    dues: list[datetime] = []
    # The random ticks, then whole days: every enrolment must finish.
    ticks = [*ticks, *[(timedelta(days=1), False)] * (2 * len(definition.steps) + 2)]
    decision: Decision = Complete()
    for step, arrives in ticks:
        now += step
        arrival = Arrival({"event": "e"}, now) if arrives else None
        current = state(position, contact, arrival)
        decision = decide(definition, current, now)
        assert decide(definition, current, now) == decision  # pure: a repeated task agrees
        while isinstance(decision, SendEmail):  # the worker sends, stores `then`, asks again
            assert decision.due_at <= now
            assert decision.then.step_index == decision.step_index + 1
            dues.append(decision.due_at)
            sent.append(decision.step_index)
            position = decision.then
            decision = decide(definition, state(position, contact, None), now)
        if isinstance(decision, Exit | Complete):
            break
        assert decision.step_index >= position.step_index
        if isinstance(decision, Schedule):
            assert decision.due_at > now
            dues.append(decision.due_at)
        else:
            assert decision.since < decision.timeout_at
            assert decision.timeout_at > now
            dues.append(decision.since)
        position = decision.position
        # Storing the position and deciding again at once changes nothing (crash recovery).
        assert decide(definition, state(position, contact, None), now) == decision
    assert isinstance(decision, Exit | Complete), "the enrolment finished"
    assert dues == sorted(dues), "due times never move backwards"
    assert len(sent) == len(set(sent)), "each email step is sent at most once"
    assert all(isinstance(definition.steps[index], EmailStep) for index in sent)


@given(
    definition=definitions, contact=contacts, offset=st.integers(0, 10_000), arrives=st.booleans()
)
def test_a_decision_depends_only_on_its_inputs(
    definition: Definition, contact: dict[str, object], offset: int, arrives: bool
) -> None:
    now = T0 + timedelta(seconds=offset)
    arrival = Arrival({"event": "e"}, now) if arrives else None
    for index in range(len(definition.steps) + 1):
        current = EnrolmentState(index, T0, contact, None, arrival)
        assert decide(definition, current, now) == decide(definition, current, now)
