"""What a case keeps of a message that joins it (`workflows.components.messages`): pure rules,
no Temporal."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.helpers import customer_message
from workflows.components.messages import MAX_KEPT, describe_messages, join_message
from workflows.contracts.messages import JoinedMessage

AT = datetime(2030, 1, 2, 3, 4, tzinfo=UTC)


def test_a_message_is_kept_by_reference_once_and_the_latest_stay() -> None:
    kept: list[JoinedMessage] = []
    first = join_message(kept, customer_message("m-1", "my address is 1 Main St"), received_at=AT)
    assert first is not None and first.text is None
    assert None is join_message(kept, customer_message("m-1", "again"), received_at=AT)
    for n in range(2, MAX_KEPT + 3):
        join_message(kept, customer_message(f"m-{n}", "more"), received_at=AT)
    assert (MAX_KEPT, "m-3", f"m-{MAX_KEPT + 2}") == (
        len(kept),
        kept[0].message_id,
        kept[-1].message_id,
    )
    (line,) = describe_messages(kept)
    assert f"m-{MAX_KEPT + 2}" in line and "2030-01-02 03:04 UTC" in line
    assert [] == describe_messages([])


def test_the_text_is_kept_only_when_asked() -> None:
    kept: list[JoinedMessage] = []
    joined = join_message(kept, customer_message("m-1", "call me"), received_at=AT, keep_text=True)
    assert joined is not None and "call me" == joined.text
    assert "call me" not in describe_messages(kept)[0]
