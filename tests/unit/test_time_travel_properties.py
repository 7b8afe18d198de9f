"""Time travel against random histories, on the in-memory store: at now it is the live answer, and at the
time of any of the subject's events it is the subject's stream folded up to that moment."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from consent.domain import catalog as cat
from consent.domain.decision import decide
from consent.domain.streams import subject_stream
from consent.domain.subject import Change, SubjectConsents
from tests.unit.test_use_cases import MARKETING, World, new_world

STEPS = st.lists(st.tuples(st.sampled_from(["grant", "withdraw", "object", "revise", "reshape"]),
                           st.sampled_from([None, "acme"]), st.integers(min_value=0, max_value=90)),
                 min_size=1, max_size=12)


async def play(world: World, steps: list) -> None:
    """Each step a few minutes after the last (or at the same moment): subject changes, purpose revisions
    (material on even minutes), and the partner's data uses narrowed or widened."""
    for action, partner, minutes in steps:
        world.clock.advance(minutes=minutes)
        if action == "revise":
            spec = cat.PurposeSpec(title=MARKETING.title, description=f"Offers, take {minutes}",
                                   legal_basis="consent", retention="P30D")
            await world.catalogs.put_purpose("marketing", spec, minutes % 2 == 0, "admin:ops")
        elif action == "reshape":
            scopes = ("email", "phone") if minutes % 2 else ("email",)
            await world.catalogs.put_partner("acme", cat.PartnerSpec(
                name="Acme", status="active", data_uses={"marketing": scopes}), "admin:ops")
        else:
            expiry = world.clock.now() + timedelta(minutes=30) if action == "grant" and minutes > 45 else None
            change = Change(purpose="marketing", action=action, partner=partner, expires_at=expiry)
            await world.subjects.change_consents("ann", [change], "api", None, "subject")


@settings(max_examples=40, deadline=None)
@given(steps=STEPS)
async def test_at_now_is_live_and_at_each_event_is_the_fold_up_to_it(steps):
    world = await new_world()
    await play(world, steps)
    now = world.clock.now()
    live, past = await world.subjects.state("ann"), await world.subjects.state_at("ann", now)
    assert (past.version, past.records, past.global_opt_out) == (live.version, live.records, live.global_opt_out)
    catalog_then = await world.catalogs.catalog_at(now)
    assert catalog_then.purposes == world.catalogs.catalog.purposes
    assert catalog_then.partners == world.catalogs.catalog.partners
    for scopes in (["email"], ["email", "phone"]):
        for partner in (None, "acme"):
            assert decide(catalog_then, past, partner, "marketing", scopes, now) == decide(
                world.catalogs.catalog, live, partner, "marketing", scopes, now)
    async with world.unit_of_work() as uow:
        stream = await uow.log.read_stream(subject_stream("ann"), 0, 1000)
    for event in stream:
        folded = SubjectConsents("ann")
        for earlier in stream:
            if earlier.event.occurred_at <= event.event.occurred_at:  # a moment names all that happened by then
                folded.apply(earlier.event)
        at_event = await world.subjects.state_at("ann", event.event.occurred_at)
        assert (at_event.version, at_event.records) == (folded.version, folded.records)
