"""Export formats, pure: the fast JSONL line writer gives exactly the bytes of the format's builder."""

import random

import orjson
import pytest

from services.curation import formats

ALPHABET = 'ab "\\\n\t\r\x00\x01\x1f\x7f/é☕😀\u2028<>&' + "0123456789"


def records(n: int) -> list[formats.Record]:
    rng = random.Random(7)

    def text() -> str:
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))

    return [
        formats.Record(
            id=str(i), prompt=text(), chosen=text(), rejected=rng.choice([None, text()]),
            strength=rng.choice([None, 0.25]), context_documents=rng.choice(["[]", '[{"t":"x"}]']),
            annotator=rng.choice([None, "a@b.c"]), notes=rng.choice([None, text()]),
            feedback_ids=rng.choice(["[]", '["f1","f2"]']), strategy="manual", in_validation=rng.random() < 0.5,
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("fmt", [f for f in formats.FORMATS if f != "parquet"])
@pytest.mark.parametrize("system", [None, 'Be "brief".\n'])
def test_line_writer_gives_the_builders_bytes(fmt, system):
    write = formats.json_line_writer(fmt, system)
    for r in records(500):
        assert write(r) == orjson.dumps(formats.BUILDERS[fmt](r, system)) + b"\n"


def test_only_formats_placing_the_texts_whole_get_a_template():
    """A builder that formats a text into a longer string (anthropic) or shows other fields (jsonl)
    must not be templated: the template would give every line the same values."""
    templated = {f for f in formats.FORMATS if f != "parquet"
                 and formats.json_line_writer(f, None).__name__ == "templated_line"}
    assert templated == {"openai_sft", "openai_dpo", "bedrock_claude", "trl_dpo"}
