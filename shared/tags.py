"""Tags on feedback: one rule for what a tag is, shared by the services that store or filter by them
(feedback stores reviewed tags; curation pairs feedback by tag)."""

from shared.errors import Invalid

MAX_TAG_LENGTH = 64


class InvalidTag(Invalid):
    def __init__(self, message: str):
        super().__init__("tags", message)


def normalize_tag(tag: str) -> str:
    """A tag as it is stored and compared: trimmed and lower-cased."""
    return tag.strip().lower()


def normalize_tags(tags: list[str]) -> tuple[str, ...]:
    """Tags are trimmed, lower-cased and de-duplicated, keeping the order given."""
    out: dict[str, None] = {}
    for tag in tags:
        clean = normalize_tag(tag)
        if not clean:
            raise InvalidTag("tags must not be empty")
        if len(clean) > MAX_TAG_LENGTH:
            raise InvalidTag(f"tag longer than {MAX_TAG_LENGTH} characters: {clean[:20]}...")
        out[clean] = None
    return tuple(out)
