"""Input that parses but cannot be stored is refused with a 422 naming the field, never a 500:
NUL characters, lone surrogates, NaN/Infinity, integers beyond 64 bits, deep nesting (issue 13,
reproductions 1, 2, 3, 6 and 7). tests/feedback/test_bad_input.py sends them to a real service."""

import json

import pytest

from shared.input_guard import MAX_DEPTH, NOT_PARSED, check_json, query_problem

GOOD = b'{"query": "q", "response": "r", "feedback_type": "thumbs_up"}'


def raw(body: str) -> bytes:
    return body.encode()


@pytest.mark.parametrize(
    "body, field",
    [
        (r'{"query": "a\u0000", "response": "r", "feedback_type": "thumbs_up"}', "query"),
        (r'{"items": [{"query": "q"}, {"tags": ["ok", "a\u0000"]}]}', "items.1.tags.1"),
        (r'{"feedback_value": {"x": "\ud800"}}', "body"),
        (r'{"tags": ["a\udc00"]}', "body"),
        ('{"feedback_value": {"n": 18446744073709551616}}', "feedback_value.n"),
        ('{"hyperparameters": {"lr": NaN}}', "body"),
        ('{"hyperparameters": {"lr": -Infinity}}', "body"),
        ('{"feedback_value": ' + "[" * 300 + "]" * 300 + "}", "feedback_value" + ".0" * (MAX_DEPTH - 1)),
        (r'{"k\u0000": 1}', "k\x00"),
    ],
)
def test_what_cannot_be_stored_is_named(body, field):
    problem, _ = check_json(raw(body))
    assert problem is not None and problem[0] == field


DEEPEST = b'{"a": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"


@pytest.mark.parametrize("body", [GOOD, b'{"n": 9223372036854775807, "s": "1234567890123456789012345"}',
                                  DEEPEST, b"{not json", b""])
def test_what_can_be_stored_or_is_merely_malformed_passes(body):
    assert check_json(body)[0] is None


@pytest.mark.parametrize("body", [
    GOOD, DEEPEST,
    b'{"n": 9223372036854775807, "x": 1.2345678901234567890123, "s": "1234567890123456789012345"}',
    b'{"a": 1, "a": 2, "f": [0.1, 1e-7, 2.5e300, -0.0], "u": "caf\\u00e9 \\ud83d\\ude00 \\u00e9", "t": true}',
])
def test_the_document_the_guard_hands_the_route_is_the_one_the_stdlib_parses(body):
    """Routes take the guard's parse (orjson) instead of json.loads: it must be the same document."""
    problem, doc = check_json(body)
    assert problem is None and doc == json.loads(body)
    assert [type(v) for v in doc.values()] == [type(v) for v in json.loads(body).values()]


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"lr": NaN}'])
def test_nothing_is_handed_on_for_a_body_that_does_not_parse_strictly(body):
    assert check_json(body)[1] is NOT_PARSED


def test_query_parameters_are_checked():
    assert query_problem(b"tag=%00") == ("query.tag", "holds a NUL character")
    assert query_problem(b"limit=5&q=a%ed%a0%80") == ("query.q", "is not valid UTF-8")
    assert query_problem(b"tag=deploy&q=caf%C3%A9") is None
