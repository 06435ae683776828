"""Export formats: what one line (or row) of each looks like, which dataset types each takes, and
each provider's documented rules and limits. Pure: no I/O.

Line shapes follow the providers' current documents:
  * openai_sft — chat fine-tuning: {"messages": [system?, user, assistant]}
  * openai_dpo — preference fine-tuning: {"input": {"messages": [user]}, "preferred_output": [assistant],
    "non_preferred_output": [assistant]}
  * anthropic — the spec's form: {"input": "Human: <query>\\n\\nAssistant:", "output": " <answer>"}
  * bedrock_claude — Claude 3 on Bedrock: {"system"?: str, "messages": [...]}, at least two messages,
    user first, roles alternating, assistant last, no other keys
  * trl_dpo — TRL's DPOTrainer: {"prompt", "chosen", "rejected"}
  * jsonl — every field of the pair or sample with its provenance; parquet — trl_dpo's columns plus
    provenance.

Token counts are estimated, never tokenized: tiktoken fetches its encodings from the internet at
run time, which these machines cannot. The estimate is ceil(UTF-8 bytes / 3) — about a third more
than GPT/Claude tokenizers give for English (≈4 bytes a token) and close for CJK text (3 bytes a
character, about a token each) — so a limit check errs on the side of refusing.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

INSTRUCTION_TYPES = ("instruction_tuning",)
FORMATS = ("openai_sft", "openai_dpo", "anthropic", "bedrock_claude", "trl_dpo", "parquet", "jsonl")
NEEDS_PAIRS = {"openai_dpo", "trl_dpo"}  # a rejected answer is part of the line
BYTES_PER_TOKEN = 3
TOKEN_ESTIMATE = "ceil(UTF-8 bytes / 3), an estimate that errs high for English text"


@dataclass(frozen=True)
class ProviderRules:
    provider: str
    max_tokens_per_example: int | None
    min_examples: int
    max_train_examples: int | None = None
    max_validation_examples: int | None = None


# OpenAI: at least 10 examples; 65,536 tokens per example for gpt-4o-mini / gpt-4o fine-tuning.
# Bedrock (Claude 3 Haiku customization): 32–10,000 training records, up to 1,000 validation
# records, 32,000 tokens per record.
RULES = {
    "openai_sft": ProviderRules("openai", 65_536, 10),
    "openai_dpo": ProviderRules("openai", 65_536, 10),
    "bedrock_claude": ProviderRules("bedrock", 32_000, 32, 10_000, 1_000),
    "anthropic": ProviderRules("anthropic", 100_000, 1),
    "trl_dpo": ProviderRules("huggingface", None, 1),
    "parquet": ProviderRules("generic", None, 1),
    "jsonl": ProviderRules("generic", None, 1),
}


class UnsupportedFormat(ValueError):
    """A format this dataset type cannot be exported to (or no such format)."""


def check_format(fmt: str, dataset_type: str) -> None:
    if fmt not in FORMATS:
        raise UnsupportedFormat(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt in NEEDS_PAIRS and dataset_type in INSTRUCTION_TYPES:
        raise UnsupportedFormat(
            f"format {fmt} needs preference pairs (chosen and rejected answers); an {dataset_type} dataset "
            "has one answer per prompt: use openai_sft, anthropic, bedrock_claude, jsonl or parquet"
        )


class Record(NamedTuple):
    """One example, whatever its origin: a preference pair, or an approved feedback item (then
    `rejected` is None and `chosen` is the correction if there is one, else the response). The
    fields come in the order the export query selects them; `context_documents` and `feedback_ids`
    are JSON text, as the database gives them. Formats that do not export a field get it as None."""

    id: str
    prompt: str
    chosen: str
    rejected: str | None
    strength: float | None
    context_documents: str
    annotator: str | None
    notes: str | None
    strategy: str
    feedback_ids: str  # a JSON array
    in_validation: bool  # the last two come last in every row of the export query, short or not


FULL_ROW_FORMATS = ("jsonl", "parquet")  # the formats exporting more than the texts: the others read short rows


def record(row: Record | tuple) -> Record:
    """A row of the export query as a Record. For the formats that export only the texts the query
    leaves the other fields out (less to decode): a short row, `id, prompt, chosen, rejected,
    feedback_ids, in_validation`, whose first four fields are at their Record positions."""
    if len(row) == len(Record._fields):
        return Record._make(row)
    example_id, prompt, chosen, rejected, feedback_ids, in_validation = row
    return Record(example_id, prompt, chosen, rejected, strength=None, context_documents=None, annotator=None,
                  notes=None, strategy=None, feedback_ids=feedback_ids, in_validation=in_validation)


def _positions(*names: str) -> tuple[int, ...]:
    return tuple(Record._fields.index(n) for n in names)


# What each format puts in its files, so what must be masked: the rest never leaves.
_ANSWER = _positions("prompt", "chosen")
_PAIR = _positions("prompt", "chosen", "rejected")
EXPORTED_FIELDS = {
    "openai_sft": _ANSWER,
    "openai_dpo": _PAIR,
    "anthropic": _ANSWER,
    "bedrock_claude": _ANSWER,
    "trl_dpo": _PAIR,
    "parquet": _PAIR,
    "jsonl": _positions("prompt", "chosen", "rejected", "annotator", "notes", "context_documents"),
}


def openai_sft(r: Record, system: str | None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": r.prompt}, {"role": "assistant", "content": r.chosen}]
    return {"messages": messages}


def openai_dpo(r: Record, system: str | None) -> dict:
    return {
        "input": {"messages": [{"role": "user", "content": r.prompt}]},
        "preferred_output": [{"role": "assistant", "content": r.chosen}],
        "non_preferred_output": [{"role": "assistant", "content": r.rejected}],
    }


def anthropic(r: Record, system: str | None) -> dict:
    return {"input": f"Human: {r.prompt}\n\nAssistant:", "output": f" {r.chosen}"}


def bedrock_claude(r: Record, system: str | None) -> dict:
    line: dict[str, Any] = {"system": system} if system else {}
    line["messages"] = [{"role": "user", "content": r.prompt}, {"role": "assistant", "content": r.chosen}]
    return line


def trl_dpo(r: Record, system: str | None) -> dict:
    return {"prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected}


def generic(r: Record, system: str | None) -> dict:
    return {
        "id": r.id,
        "prompt": r.prompt,
        "chosen": r.chosen,
        "rejected": r.rejected,
        "preference_strength": r.strength,
        "system": system,
        "context_documents": orjson.Fragment(r.context_documents),
        "annotator_email": r.annotator,
        "annotation_notes": r.notes,
        "source_feedback_ids": orjson.Fragment(r.feedback_ids),
        "strategy": r.strategy,
    }


def parquet_row(r: Record, system: str | None) -> dict:
    return {
        "prompt": r.prompt,
        "chosen": r.chosen,
        "rejected": r.rejected,
        "id": r.id,
        "preference_strength": r.strength,
        "source_feedback_ids": orjson.loads(r.feedback_ids),
        "strategy": r.strategy,
    }


BUILDERS = {
    "openai_sft": openai_sft,
    "openai_dpo": openai_dpo,
    "anthropic": anthropic,
    "bedrock_claude": bedrock_claude,
    "trl_dpo": trl_dpo,
    "jsonl": generic,
    "parquet": parquet_row,
}


def json_line_writer(fmt: str, system: str | None) -> Callable[[Record], bytes]:
    """A function giving a record's JSONL line (newline included) of `fmt`, the bytes orjson gives for
    the builder's dict. Where the builder only places the example's texts whole, the line is the
    constant JSON around them joined with each text's JSON string: found once by building a line
    from marker texts, and checked (each marker exactly once, the same constants for other markers),
    so it follows the builder, without building and dumping a dict for every line."""
    build = BUILDERS[fmt]

    def generic_line(r: Record | tuple) -> bytes:
        return orjson.dumps(build(record(r), system)) + b"\n"

    texts = _positions("prompt", "chosen", "rejected")

    def marked(tag: str, other: dict) -> tuple[list[bytes], list[int]]:
        values = dict(other)
        values.update({Record._fields[i]: f"\x01{tag}{i}\x02" for i in texts})
        line = orjson.dumps(build(Record(**values), system)) + b"\n"
        found = sorted((line.index(m), i) for i in texts
                       if line.count(m := orjson.dumps(f"\x01{tag}{i}\x02")) == 1)
        pieces, at = [], 0
        for start, i in found:
            pieces.append(line[at:start])
            at = start + len(orjson.dumps(f"\x01{tag}{i}\x02"))
        pieces.append(line[at:])
        if any(f"\\u0001{tag}".encode() in piece for piece in pieces):
            return [], []  # a marker inside a longer string: not a text placed whole
        return pieces, [i for _, i in found]

    # the other fields differ between the two probes: a line that shows any of them is no template
    pieces, fields = marked("a", dict(id="", strength=None, context_documents="[]", annotator=None, notes=None,
                                      feedback_ids="[]", strategy="", in_validation=False))
    if not fields or (pieces, fields) != marked("b", dict(
            id="x", strength=0.5, context_documents='[{"a":1}]', annotator="a@b.c", notes="n", feedback_ids='["f"]',
            strategy="s", in_validation=True)):
        return generic_line
    dumps = orjson.dumps
    if len(fields) == 3:
        (a, b, c, d), (i, j, k) = pieces, fields

        def templated_line(r: Record | tuple) -> bytes:  # a Record or any row in its field order
            return b"".join((a, dumps(r[i]), b, dumps(r[j]), c, dumps(r[k]), d))

        return templated_line
    if len(fields) == 2:
        (a, b, c), (i, j) = pieces, fields

        def templated_line(r: Record | tuple) -> bytes:
            return b"".join((a, dumps(r[i]), b, dumps(r[j]), c))

        return templated_line
    return generic_line



def _nonempty(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _messages_problems(messages: Any, *, first: str, last: str, alternate: bool) -> list[str]:
    if not isinstance(messages, list) or len(messages) < 2:
        return ["messages must be a list of at least two messages"]
    problems = []
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    if roles[0] != first:
        problems.append(f"the first message must be from the {first}")
    if roles[-1] != last:
        problems.append(f"the last message must be from the {last}")
    if alternate and any(a == b for a, b in zip(roles, roles[1:], strict=False)):
        problems.append("user and assistant messages must alternate")
    if not all(isinstance(m, dict) and _nonempty(m.get("content")) for m in messages):
        problems.append("every message needs non-empty text content")
    return problems


def line_problems(fmt: str, line: dict) -> list[str]:
    """What a provider would reject about one line (empty when the line is fine)."""
    if fmt == "openai_sft":
        messages = line.get("messages")
        body = messages[1:] if messages and messages[0].get("role") == "system" else messages
        return _messages_problems(body, first="user", last="assistant", alternate=True)
    if fmt == "openai_dpo":
        problems = _messages_problems(
            [*line["input"]["messages"], *line["preferred_output"]], first="user", last="assistant", alternate=True
        )
        if not _nonempty(line["non_preferred_output"][0].get("content")):
            problems.append("non_preferred_output needs non-empty content")
        return problems
    if fmt == "bedrock_claude":
        problems = _messages_problems(line.get("messages"), first="user", last="assistant", alternate=True)
        extra = set(line) - {"system", "messages"}
        if extra:
            problems.append(f"no keys other than system and messages are allowed: {sorted(extra)}")
        if "system" in line and not isinstance(line["system"], str):
            problems.append("system must be a string")
        return problems
    if fmt == "anthropic":
        ok = line["input"].startswith("Human: ") and line["input"].endswith("\n\nAssistant:")
        if ok and _nonempty(line["output"]):
            return []
        return ["input must be 'Human: …\\n\\nAssistant:' and output non-empty"]
    if fmt in ("trl_dpo", "parquet"):
        has_rejected = line.get("rejected") is not None or fmt == "trl_dpo"
        keys = ("prompt", "chosen", "rejected") if has_rejected else ("prompt", "chosen")
        return [f"{k} must be non-empty text" for k in keys if not _nonempty(line.get(k))]
    if _nonempty(line.get("prompt")) and _nonempty(line.get("chosen")):
        return []
    return ["prompt and chosen must be non-empty"]
