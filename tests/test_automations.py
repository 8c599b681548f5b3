"""The Automations `candleflow setup` manages, compared as the server returns them."""

import itertools
import uuid

from prefect.events.schemas.automations import AutomationCore

from deployments.automations import failure_automation, heartbeat_automation
from deployments.setup import _same_automation


def test_an_automation_read_back_with_its_sets_in_another_order_is_the_same() -> None:
    """The server answers with `expect` as a JSON list in the order it stored; rebuilt here, that set may iterate
    in another order than the wanted one (string hashes collide in a small set): still the same automation."""
    for wanted in (
        failure_automation([uuid.uuid4(), uuid.uuid4()], on_success=True),
        heartbeat_automation(40),
    ):
        stored = wanted.model_dump(mode="json")
        names = stored["trigger"]["expect"]
        for order in itertools.permutations(names):
            answer = {**stored, "trigger": {**stored["trigger"], "expect": list(order)}}
            assert _same_automation(AutomationCore.model_validate(answer), wanted), order


def test_a_changed_automation_is_not_the_same() -> None:
    wanted = failure_automation([uuid.uuid4()], on_success=False)
    stored = wanted.model_dump(mode="json")
    fewer = {**stored, "trigger": {**stored["trigger"], "expect": stored["trigger"]["expect"][:1]}}
    other_block = failure_automation([uuid.uuid4()], on_success=False)
    assert not _same_automation(AutomationCore.model_validate(fewer), wanted)
    assert not _same_automation(other_block, wanted)
    assert not _same_automation(failure_automation([uuid.uuid4()], on_success=True), wanted)
