"""Which failures the consumer retries and which it dead-letters (pure, no I/O)."""

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka import ConsumerRecord
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError, OperationalError

from shared.consumer import decode_record, is_transient
from shared.events import FeedbackReviewed, FeedbackSubmitted, UnknownEvent


def record(value: bytes | None) -> ConsumerRecord:
    return ConsumerRecord("t", 0, 0, 0, 0, None, value, None, 0, len(value or b""), [])


def test_database_and_network_failures_are_transient():
    assert is_transient(OperationalError("select 1", {}, Exception("server closed the connection")))
    assert is_transient(ConnectionResetError())
    assert is_transient(TimeoutError())
    assert is_transient(asyncpg.exceptions.SerializationError("could not serialize"))


def test_data_errors_are_not_transient():
    assert not is_transient(IntegrityError("insert", {}, Exception("duplicate key")))
    assert not is_transient(ValueError("bad"))


def test_decode_record_accepts_a_good_envelope():
    env = FeedbackSubmitted(query="q", response="r", feedback_type="thumbs_up").envelope(
        organization="acme", producer="chat"
    )
    delivery = decode_record(record(env.model_dump_json().encode()))
    assert delivery.envelope.event_id == env.event_id and delivery.event.query == "q"


@pytest.mark.parametrize(
    "value, error",
    [
        (None, ValueError),
        (b"{not json", ValidationError),
        (b'{"event_id": "x"}', ValidationError),
    ],
)
def test_decode_record_refuses_what_can_never_be_processed(value, error):
    with pytest.raises(error):
        decode_record(record(value))


def test_decode_record_refuses_unknown_versions():
    env = FeedbackSubmitted(query="q", response="r", feedback_type="thumbs_up").envelope(
        organization="acme", producer="chat"
    )
    with pytest.raises(UnknownEvent):
        decode_record(record(env.model_copy(update={"version": 7}).model_dump_json().encode()))


def test_a_message_of_the_expected_type_decodes_as_the_generic_path_does():
    env = FeedbackSubmitted(query="q", response="r", feedback_type="rating", feedback_value={"rating": 4},
                            tags=["a"]).envelope(organization="acme", producer="chat")
    wire = record(env.model_dump_json().encode())
    typed, generic = decode_record(wire, FeedbackSubmitted), decode_record(wire)
    assert typed.event == generic.event and isinstance(typed.event, FeedbackSubmitted)
    assert (typed.envelope.event_id, typed.envelope.organization, typed.envelope.correlation_id) == (
        generic.envelope.event_id, generic.envelope.organization, generic.envelope.correlation_id)


def test_expecting_a_type_still_names_what_is_wrong_with_another():
    reviewed = FeedbackReviewed(feedback_id=uuid.uuid4(), status="approved", previous_status="pending",
                                reviewed_at=datetime.now(UTC)).envelope(organization="acme", producer="x")
    delivery = decode_record(record(reviewed.model_dump_json().encode()), FeedbackSubmitted)
    assert isinstance(delivery.event, FeedbackReviewed)  # the consumer then dead-letters it as WrongEventType
    bad_payload = FeedbackSubmitted(query="q", response="r", feedback_type="thumbs_up").envelope(
        organization="acme", producer="chat").model_copy(update={"payload": {"query": "q"}})
    with pytest.raises(ValidationError, match="response"):
        decode_record(record(bad_payload.model_dump_json().encode()), FeedbackSubmitted)
    with pytest.raises(ValidationError):
        decode_record(record(b"{not json"), FeedbackSubmitted)
