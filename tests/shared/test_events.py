"""The event contract: topic names, envelopes, versions, additive payloads (pure, no I/O)."""

import functools
import operator
import pickle
import uuid

import orjson
import pytest
from pydantic import ValidationError

from shared.events import (
    Envelope,
    FeedbackReceived,
    FeedbackSubmitted,
    UnknownEvent,
    decode_payload,
    dlq_topic,
    dot_case,
    topic_for,
)


def test_topic_names_follow_the_convention():
    assert dot_case("FeedbackReceived") == "feedback.received"
    assert topic_for("DatasetExported", 1) == "rlhf.dataset.exported.v1"
    assert FeedbackSubmitted.topic() == "rlhf.feedback.submitted.v1"
    assert dlq_topic(FeedbackSubmitted.topic()) == "rlhf.feedback.submitted.v1.dlq"


def test_envelope_round_trip_decodes_the_typed_payload():
    event = FeedbackSubmitted(query="q", response="r", feedback_type="rating", feedback_value={"rating": 5})
    env = event.envelope(organization="acme", producer="chat", correlation_id="c-1")
    assert (env.type, env.version, env.organization, env.correlation_id) == ("FeedbackSubmitted", 1, "acme", "c-1")
    again = Envelope.model_validate_json(env.model_dump_json())
    assert decode_payload(again) == event


def test_correlation_id_defaults_to_the_event_id():
    env = FeedbackSubmitted(query="q", response="r", feedback_type="thumbs_up").envelope(
        organization="acme", producer="chat"
    )
    assert env.correlation_id == str(env.event_id)


def test_unknown_version_and_type_are_refused():
    env = FeedbackSubmitted(query="q", response="r", feedback_type="thumbs_up").envelope(
        organization="acme", producer="chat"
    )
    with pytest.raises(UnknownEvent, match="v2"):
        decode_payload(env.model_copy(update={"version": 2}))
    with pytest.raises(UnknownEvent, match="Nope"):
        decode_payload(env.model_copy(update={"type": "Nope"}))


def test_payloads_are_additive_a_new_field_is_ignored():
    env = FeedbackSubmitted(query="q", response="r", feedback_type="thumbs_up").envelope(
        organization="acme", producer="chat"
    )
    newer = env.model_copy(update={"payload": {**env.payload, "added_in_a_later_release": 1}})
    assert decode_payload(newer).query == "q"


@pytest.mark.parametrize(
    "value, ok",
    [({"rating": 1}, True), ({"rating": 4.5}, True), ({"rating": 0}, False), ({"rating": True}, False),
     ({"rating": "5"}, False), ({}, False)],
)
def test_a_rating_carries_a_rating_from_1_to_5(value, ok):
    make = lambda: FeedbackSubmitted(query="q", response="r", feedback_type="rating", feedback_value=value)  # noqa: E731
    if ok:
        assert make().feedback_value == value
    else:
        with pytest.raises(ValidationError, match="rating"):
            make()


def test_a_correction_carries_the_corrected_answer():
    with pytest.raises(ValidationError, match="correction"):
        FeedbackSubmitted(query="q", response="r", feedback_type="correction", feedback_value={"correction": "  "})
    ok = FeedbackSubmitted(query="q", response="r", feedback_type="correction", feedback_value={"correction": "x"})
    assert ok.feedback_value["correction"] == "x"


def test_events_are_frozen():
    event = FeedbackReceived(query="q", response="r", feedback_type="thumbs_up", feedback_id=uuid.uuid4(),
                             created_at="2026-01-01T00:00:00Z", source="http")
    with pytest.raises(ValidationError):
        event.query = "changed"


def test_outbox_encoding_decodes_back_to_the_same_event_and_keys_by_entity():
    from shared.outbox import crc32_partitioner, encode

    event = FeedbackReceived(query="q", response="r", feedback_type="thumbs_up", feedback_id=uuid.uuid4(),
                             created_at="2026-01-01T00:00:00Z", source="http")
    message = encode(event, organization="acme", producer="feedback", correlation_id="c-9")
    envelope = Envelope.model_validate_json(message.envelope)
    assert decode_payload(envelope) == event
    assert (envelope.organization, envelope.correlation_id, envelope.producer) == ("acme", "c-9", "feedback")
    assert (message.topic, message.key, message.event_id) == (
        "rlhf.feedback.received.v1", str(event.feedback_id), envelope.event_id
    )
    key = message.key.encode()
    assert crc32_partitioner(key, [0, 1, 2], [0, 1, 2]) == crc32_partitioner(key, [0, 1, 2], [1])


def test_job_events_without_the_registry_fields_still_decode():
    """JobStarted/JobCompleted gained export, model name and evaluation: old payloads still decode."""
    from datetime import UTC, datetime

    from shared.events import JobCompleted

    old = {"job_id": str(uuid.uuid4()), "provider": "openai", "base_model": "gpt-4o-mini-2024-07-18",
           "resulting_model_id": "ft:gpt-4o-mini:x", "completed_at": datetime.now(UTC).isoformat()}
    env = Envelope(event_id=uuid.uuid4(), type="JobCompleted", version=1, occurred_at=datetime.now(UTC),
                   organization="acme", correlation_id="c", producer="training", payload=old)
    event = decode_payload(env)
    assert isinstance(event, JobCompleted)
    assert (event.export_version, event.model_name, event.evaluation, event.export) == (None, None, None, None)


def test_registry_topics():
    from shared.events import DeploymentRefused, DeploymentRequested, ModelDeployed, ModelRolledBack

    assert ModelDeployed.topic() == "rlhf.model.deployed.v1"
    assert ModelRolledBack.topic() == "rlhf.model.rolled.back.v1"
    assert DeploymentRequested.topic() == "rlhf.deployment.requested.v1"
    assert DeploymentRefused.topic() == "rlhf.deployment.refused.v1"


def test_events_from_their_fields_travel_as_their_models_would():
    from datetime import UTC, datetime

    from shared.outbox import encode, encode_many

    models, payloads = [], []
    for i, source in enumerate(["bus", "http", "http"]):
        fields = dict(query="q", response=f"r{i}", feedback_type="rating",
                      feedback_value={"rating": 4, "x": [1, {"y": None}]}, tags=["a", "b"], session_id="s",
                      latency_ms=12, feedback_id=uuid.uuid4(),
                      created_at=datetime(2026, 12, 2, 1, 2, 3, 456789, tzinfo=UTC), source=source)
        models.append(FeedbackReceived(**fields))
        payloads.append(dict(fields, feedback_id=str(fields["feedback_id"])))  # orjson's types: an id as its str
    event_ids = [uuid.uuid4() for _ in models]
    from_fields = encode_many(FeedbackReceived, payloads, organization="acme", producer="p",
                              event_ids=event_ids, correlation_ids=["c", None, "c"])
    for model, payload, event_id, message, correlation_id in zip(models, payloads, event_ids, from_fields,
                                                                  ["c", str(event_ids[1]), "c"], strict=True):
        from_model = encode(model, organization="acme", producer="p", correlation_id=correlation_id)
        assert (message.topic, message.key, message.event_type) == (from_model.topic, from_model.key,
                                                                    from_model.event_type)
        assert message.key == payload["feedback_id"]
        decoded = [decode_payload(Envelope.model_validate_json(m.envelope)) for m in (message, from_model)]
        assert decoded[0] == decoded[1] == model
        envelope = Envelope.model_validate_json(message.envelope)
        assert (envelope.event_id, envelope.organization, envelope.producer, envelope.correlation_id) == (
            event_id, "acme", "p", correlation_id)
        assert (message.event_id, message.organization, message.correlation_id) == (event_id, "acme",
                                                                                    correlation_id)


def test_ids_made_many_at_a_time_are_time_ordered_version_7_uuids():
    import time

    from shared.ids import new_ids

    before = time.time_ns() // 1_000_000
    ids = new_ids(10_000)
    later = new_ids(10)
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == 10_000
    assert {(i.version, i.variant) for i in ids} == {(7, uuid.RFC_4122)}
    assert {i.int >> 80 for i in ids} <= set(range(before, after + 1))  # the Unix time in milliseconds
    assert max(i.int >> 80 for i in ids) <= min(i.int >> 80 for i in later)
    assert all(uuid.UUID(str(i)) == i for i in ids[:100])
    # asyncpg's C type (what it reads from a uuid column): UUIDs like any other, equal, hashed, pickled,
    # ordered alike; orjson takes them as their str.
    made = [uuid.UUID(int=i.int) for i in ids[:100]]
    assert all(isinstance(i, uuid.UUID) for i in ids[:100])
    assert ids[:100] == made and [hash(i) for i in ids[:100]] == [hash(m) for m in made]
    assert pickle.loads(pickle.dumps(ids[:100])) == made and sorted(ids[:100]) == sorted(made)
    assert orjson.dumps([str(i) for i in ids[:100]]) == orjson.dumps(made)
    # Every one of the 74 random bits varies (none is stuck at 0 or 1).
    random_bits = ((1 << 12) - 1) << 64 | ((1 << 62) - 1)
    assert functools.reduce(operator.or_, (i.int & random_bits for i in ids)) == random_bits
    assert functools.reduce(operator.and_, (i.int & random_bits for i in ids)) == 0