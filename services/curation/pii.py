"""PII detection and masking for everything that leaves curation for training.

What is found, and how:
  * EMAIL — addresses (RFC 5322's common form). The local part often *is* a person's name, which
    goes with the address.
  * PHONE — `phonenumbers` (Google's libphonenumber), valid numbers only; numbers without a
    country code are read as DEFAULT_REGION's.
  * CREDIT_CARD — 13–19 digits, optionally grouped by spaces or dashes, that pass the Luhn check.
  * IP_ADDRESS — IPv4 and IPv6, confirmed by the standard library's `ipaddress`.
  * SECRET — API keys and tokens: `sk-…` (OpenAI-style), `AKIA…`/`ASIA…` (AWS access key ids),
    `ghp_…`/`github_pat_…`, Slack `xox?-…`, JWTs, `Bearer <token>`, PEM private-key blocks,
    `password=`/`secret:`-style assignments, and long hex (≥32) or base64-like (≥40, mixed case
    and digits) strings.
  * PERSON — limited, and honestly so. Reliable person-name detection needs a statistical NER
    model; presidio and spaCy fetch theirs at run time, which this product's machines cannot do,
    and the only spaCy models on PyPI are unofficial third-party re-uploads whose provenance
    cannot be checked — not something to trust with a privacy guarantee. So names are masked
    only where a strong textual signal says "this is a name": after an honorific (Mr/Mrs/Ms/Dr/
    Prof …) and after "my name is" / "name:" — plus, via EMAIL, names inside email addresses.
    A bare name in free text ("ask John about it") is NOT detected.

Masking is consistent within one Masker (one per dataset export): the same value always gets the
same placeholder (`<EMAIL_1>`, `<PHONE_2>`, …), numbered in order of first appearance, so an
export of unchanged data is byte-identical. `counts` says how many occurrences of each kind were
masked; `distinct` how many different values.
"""

import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers

DEFAULT_REGION = "US"

_NAME_WORDS = r"[A-Z][a-z'-]+(?: [A-Z][a-z'-]+)?"
_HONORIFICS = ("Mr", "Ms", "Mrs", "Mx", "Dr", "Prof", "Miss", "Sir", "Madam")
_SECRET_KEYWORDS = ("password", "passwd", "pwd", "secret", "api_key", "api-key", "apikey", "access_token",
                    "access-token", "token")


class Shape:
    """Cheap facts about one text, each worked out at most once and in C (str/bytes methods), that
    the detectors' triggers test before running a regex. Most examples contain no PII; for them
    these facts rule out every detector, so no regex scans the text at all."""

    __slots__ = ("text", "_lower", "_utf8")

    def __init__(self, text: str):
        self.text = text
        self._lower: str | None = None
        self._utf8: bytes | None = None

    @property
    def lower(self) -> str:
        """Lower case as `(?i:...)` sees it: str.lower, plus the few characters the regex engine
        folds onto ASCII letters that str.lower does not (ſ → s, ı → i, İ → i + a dot, dropped)."""
        if self._lower is None:
            lower = self.text.lower()
            self._lower = lower if lower.isascii() else lower.translate(_REGEX_FOLDS)
        return self._lower

    @property
    def utf8(self) -> bytes:
        if self._utf8 is None:
            self._utf8 = self.text.encode()
        return self._utf8

    def has_run(self, table: bytes, length: int) -> bool:
        """Whether `length` consecutive bytes all belong to the class `table` marks with x."""
        return _RUNS[length] in self.utf8.translate(table)

    def has(self, table: bytes, classes: bytes) -> bool:
        """Whether the text, its bytes mapped by `table`, contains `classes`."""
        return classes in self.utf8.translate(table)


_REGEX_FOLDS = str.maketrans({"ſ": "s", "ı": "i", "\u0307": None})


def _byte_class(members: str, others: dict[str, str] | None = None) -> bytes:
    """A bytes.translate table mapping the ASCII `members` to b"x", those in `others` to what it
    says, and every other ASCII byte to b" ". Bytes of non-ASCII characters map to b"x" too (`\\d`
    and `\\s` match some): counting them as members can only make a trigger fire more often (the
    regex then decides), never less."""
    others = others or {}
    return bytes(ord("x") if b > 127 or chr(b) in members else ord(others.get(chr(b), " ")) for b in range(256))


_BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_BASE64_CLASS = _byte_class(_BASE64)
_DIGITS = "0123456789"
_CARD_CLASS = _byte_class(_DIGITS + " -")  # a card number: digits, single spaces or dashes between
_IPV4_CLASS = _byte_class(_DIGITS, {".": "."})
# A phone candidate (_MAYBE_PHONE): 7+ characters that are all digits, "+", spaces or ().-
_PHONE_CLASS = _byte_class(_DIGITS + "+().-" + "".join(chr(b) for b in range(128) if chr(b).isspace()))
_RUNS = {n: b"x" * n for n in (7, 13, 32)}


@dataclass(frozen=True)
class Detector:
    """One kind of PII: a cheap trigger on the text's Shape that must hold for the regex to be worth
    running — each trigger is implied by the regex matching (a necessary condition), so skipping
    the regex when it fails never misses PII."""

    kind: str
    pattern: re.Pattern
    trigger: Callable[[Shape], bool]


def _person_trigger(s: Shape) -> bool:
    return "name" in s.lower or _HONORIFIC.search(s.text) is not None


# The honorific branch of the PERSON pattern, without its leading \b: an alternation of literals,
# so the engine only tries the positions holding M, D, P or S.
_HONORIFIC = re.compile("(?:" + "|".join(_HONORIFICS) + r")\.? ")
DETECTORS = [
    Detector("SECRET", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
             lambda s: "PRIVATE KEY" in s.text),
    Detector("SECRET", re.compile(r"\b(?:sk|pk|rk)-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_-]{16,}"), lambda s: "k-" in s.text),
    Detector("SECRET", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), lambda s: "AKIA" in s.text or "ASIA" in s.text),
    Detector("SECRET", re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}\b|\bgithub_pat_[A-Za-z0-9_]{40,}"),
             lambda s: "_" in s.text and ("gh" in s.text or "github_pat_" in s.text)),
    Detector("SECRET", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), lambda s: "xox" in s.text),
    Detector("SECRET", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
             lambda s: "eyJ" in s.text),
    Detector("SECRET", re.compile(r"(?i:\bbearer)\s+[A-Za-z0-9._~+/=-]{16,}"), lambda s: "bearer" in s.lower),
    Detector(
        "SECRET",
        re.compile(r"(?i:\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|token)\b\s*[:=]\s*)"
                   r"[^\s\"',;]{6,}"),
        lambda s: ("=" in s.text or ":" in s.text) and any(k in s.lower for k in _SECRET_KEYWORDS),
    ),
    # Long hex (>=32) or base64-like (>=40) runs; `_looks_secret` keeps only the ones that are.
    Detector("SECRET", re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{32,}+={0,2}"),
             lambda s: s.has_run(_BASE64_CLASS, 32)),
    Detector("EMAIL", re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]++@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
                                 r"\.[A-Za-z]{2,}\b"), lambda s: "@" in s.text),
    Detector("IP_ADDRESS", re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)"),
             lambda s: s.has(_IPV4_CLASS, b"x.x")),
    Detector("IP_ADDRESS", re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{1,4}:){2,7}:?[0-9A-Fa-f]{0,4}"
                                      r"(?::[0-9A-Fa-f]{1,4})*(?![0-9A-Fa-f:])"),
             lambda s: s.text.count(":") >= 2),
    Detector("CREDIT_CARD", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"),
             lambda s: s.has_run(_CARD_CLASS, 13)),
    Detector(
        "PERSON",
        re.compile(r"(?:\b(?:" + "|".join(_HONORIFICS) + r")\.? |(?i:\bmy name is )|(?i:\bname): )"
                   f"(?P<person_name>{_NAME_WORDS})"),
        _person_trigger,
    ),
]
# Cheap gate before the (slow, thorough) phone matcher: a valid number has 10+ digits in its national
# form (DEFAULT_REGION) or starts with + and a country code.
_MAYBE_PHONE = re.compile(r"\+\d(?:[\s().-]{0,3}\d){6}|\d(?:[\s().-]{0,3}\d){9}")
def _may_hold_phone(shape: Shape) -> bool:
    return shape.has_run(_PHONE_CLASS, 7) and _MAYBE_PHONE.search(shape.text) is not None


_HEX = re.compile(r"[0-9a-fA-F]{32,}")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{32,}={0,2}")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _looks_secret(value: str) -> bool:
    """Long hex is a secret; a long base64-like run is one when it mixes lower case, upper case and
    digits (prose and paths do not)."""
    if not _BASE64_RUN.fullmatch(value):
        return True
    if _HEX.fullmatch(value):
        return True
    return (len(value) >= 40 and any(c.islower() for c in value) and any(c.isupper() for c in value)
            and any(c.isdigit() for c in value))


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _validated(kind: str, value: str) -> str | None:
    """The canonical form of a candidate (same value, same placeholder), or None if it is not PII."""
    if kind == "SECRET":
        return value if _looks_secret(value) else None
    if kind == "CREDIT_CARD":
        digits = re.sub(r"\D", "", value)
        return digits if luhn_valid(digits) else None  # not a card; the phone matcher may still take it
    if kind == "IP_ADDRESS":
        return str(ipaddress.ip_address(value)) if _is_ip(value) else None
    if kind == "EMAIL":
        return value.lower()
    return value


class Masker:
    """Masks PII in text; one instance per dataset export, so placeholders are consistent within it."""

    def __init__(self, region: str = DEFAULT_REGION):
        self.region = region
        self.counts: Counter[str] = Counter()
        self._placeholders: dict[tuple[str, str], str] = {}
        self._numbers: Counter[str] = Counter()
        self._kind = ""

    @property
    def distinct(self) -> dict[str, int]:
        return dict(sorted(self._numbers.items()))

    def summary(self) -> dict[str, dict[str, int]]:
        return {k: {"occurrences": self.counts[k], "distinct": self._numbers[k]} for k in sorted(self.counts)}

    def placeholder(self, kind: str, value: str) -> str:
        key = (kind, value)
        found = self._placeholders.get(key)
        if found is None:
            self._numbers[kind] += 1
            found = self._placeholders[key] = f"<{kind}_{self._numbers[kind]}>"
        self.counts[kind] += 1
        return found

    def mask(self, text: str) -> str:
        if not text:
            return text
        shape = Shape(text)
        for detector in DETECTORS:
            if detector.trigger(shape):
                self._kind = detector.kind
                masked = detector.pattern.sub(self._replace, shape.text)
                if masked != shape.text:  # what the next triggers test must be the text they will scan
                    shape = Shape(masked)
        if _may_hold_phone(shape):
            return self._mask_phones(shape.text)
        return shape.text

    def contains_pii(self, text: str) -> bool:
        """Whether `mask` would change `text`, without counting anything. Cheaper than masking, so
        an export can check all of a row's fields joined by NUL once and mask only rows that need it."""
        shape = Shape(text)
        for detector in DETECTORS:
            if detector.trigger(shape):
                for match in detector.pattern.finditer(text):
                    if _validated(detector.kind, match.group()) is not None:
                        return True
        if _may_hold_phone(shape):
            return phonenumbers.PhoneNumberMatcher(text, self.region, leniency=phonenumbers.Leniency.VALID).has_next()
        return False

    def mask_json(self, value):
        """Masks every string inside a JSON value (context documents, metadata)."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, list):
            return [self.mask_json(v) for v in value]
        if isinstance(value, dict):
            return {k: self.mask_json(v) for k, v in value.items()}
        return value

    def _replace(self, match: re.Match) -> str:
        kind = self._kind
        value = match.group()
        if kind == "PERSON":  # keep the words that announced the name, mask the name
            name = match.group("person_name")
            return value[: len(value) - len(name)] + self.placeholder(kind, name)
        canonical = _validated(kind, value)
        return value if canonical is None else self.placeholder(kind, canonical)

    def _mask_phones(self, text: str) -> str:
        matches = list(phonenumbers.PhoneNumberMatcher(text, self.region, leniency=phonenumbers.Leniency.VALID))
        if not matches:
            return text
        out, last = [], 0
        for m in matches:
            e164 = phonenumbers.format_number(m.number, phonenumbers.PhoneNumberFormat.E164)
            out.append(text[last : m.start])
            out.append(self.placeholder("PHONE", e164))
            last = m.end
        out.append(text[last:])
        return "".join(out)
