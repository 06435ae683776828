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


@dataclass(frozen=True)
class Detector:
    """One kind of PII: a cheap trigger on the text (`plain`, `lower`) that must hold for the regex
    to be worth running — each trigger is implied by the regex matching, so skipping is safe."""

    kind: str
    pattern: re.Pattern
    trigger: Callable[[str, str], bool]


def _has_digit(plain: str, lower: str) -> bool:
    return _DIGIT.search(plain) is not None


_DIGIT = re.compile(r"[0-9]")
DETECTORS = [
    Detector("SECRET", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
             lambda p, lo: "PRIVATE KEY" in p),
    Detector("SECRET", re.compile(r"\b(?:sk|pk|rk)-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_-]{16,}"), lambda p, lo: "k-" in p),
    Detector("SECRET", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), lambda p, lo: "AKIA" in p or "ASIA" in p),
    Detector("SECRET", re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}\b|\bgithub_pat_[A-Za-z0-9_]{40,}"),
             lambda p, lo: "_" in p),
    Detector("SECRET", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), lambda p, lo: "xox" in p),
    Detector("SECRET", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
             lambda p, lo: "eyJ" in p),
    Detector("SECRET", re.compile(r"(?i:\bbearer)\s+[A-Za-z0-9._~+/=-]{16,}"), lambda p, lo: "bearer" in lo),
    Detector(
        "SECRET",
        re.compile(r"(?i:\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|token)\b\s*[:=]\s*)"
                   r"[^\s\"',;]{6,}"),
        lambda p, lo: any(k in lo for k in _SECRET_KEYWORDS),
    ),
    # Long hex (>=32) or base64-like (>=40) runs; `_looks_secret` keeps only the ones that are.
    Detector("SECRET", re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{32,}+={0,2}"), lambda p, lo: True),
    Detector("EMAIL", re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]++@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
                                 r"\.[A-Za-z]{2,}\b"), lambda p, lo: "@" in p),
    Detector("IP_ADDRESS", re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)"), _has_digit),
    Detector("IP_ADDRESS", re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{1,4}:){2,7}:?[0-9A-Fa-f]{0,4}"
                                      r"(?::[0-9A-Fa-f]{1,4})*(?![0-9A-Fa-f:])"), lambda p, lo: "::" in p or
             p.count(":") >= 2),
    Detector("CREDIT_CARD", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), _has_digit),
    Detector(
        "PERSON",
        re.compile(r"(?:\b(?:" + "|".join(_HONORIFICS) + r")\.? |(?i:\bmy name is )|(?i:\bname): )"
                   f"(?P<person_name>{_NAME_WORDS})"),
        lambda p, lo: "name" in lo or any(h in p for h in _HONORIFICS),
    ),
]
# Cheap gate before the (slow, thorough) phone matcher: a valid number has 10+ digits in its national
# form (DEFAULT_REGION) or starts with + and a country code.
_MAYBE_PHONE = re.compile(r"\+\d(?:[\s().-]{0,3}\d){6}|\d(?:[\s().-]{0,3}\d){9}")
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
        lower = text.lower()
        for detector in DETECTORS:
            if detector.trigger(text, lower):
                self._kind = detector.kind
                text = detector.pattern.sub(self._replace, text)
        if _MAYBE_PHONE.search(text):
            text = self._mask_phones(text)
        return text

    def contains_pii(self, text: str) -> bool:
        """Whether `mask` would change `text`, without counting anything. Cheaper than masking, so
        an export can check all of a row's fields joined by NUL once and mask only rows that need it."""
        lower = text.lower()
        for detector in DETECTORS:
            if detector.trigger(text, lower):
                for match in detector.pattern.finditer(text):
                    if _validated(detector.kind, match.group()) is not None:
                        return True
        if _MAYBE_PHONE.search(text):
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
