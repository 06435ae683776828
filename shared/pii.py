"""PII detection and masking for everything that leaves curation for training, and the screen the
training service's leak check runs over a trained model's answers (`pii_kinds`).

What is found, and how:
  * EMAIL — addresses (RFC 5322's common form). The local part often *is* a person's name, which
    goes with the address.
  * PHONE — `phonenumbers` (Google's libphonenumber), valid numbers only; numbers without a
    country code are read as DEFAULT_REGION's.
  * CREDIT_CARD — 13–19 digits, optionally grouped by spaces or dashes, that pass the Luhn check.
  * IP_ADDRESS — IPv4 and IPv6, confirmed by the standard library's `ipaddress`.
  * US_SSN — US Social Security numbers written ddd-dd-dddd (dashes or spaces), outside the ranges
    the SSA never issues: area 000, 666 and 900–999, group 00, serial 0000.
  * IBAN — international bank account numbers, printed in groups of four or not: a country code,
    two check digits and the BBAN, exactly as long as the IBAN registry says for that country,
    and only when the ISO 13616 mod-97 check passes (a random code of letters and digits fails it
    96 times in 97).
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
masked; `summary()` adds how many different values.

The screen. An export screens every example and most examples hold no PII, so the first question —
which detectors are worth running on this text (the candidates) — must cost next to nothing beside
the rest of an example's work. An export asks it of a chunk's examples at once (`screen_groups`: one
scan over all their texts), then masks only the examples flagged; `mask` asks it per text,
then run only the candidates' regexes (`mask` asks again after a detector changed the text); the
regexes, `_validated` and phonenumbers stay the authority. The screen may name a detector that then
finds nothing, but never leaves out one whose regex would match (or, for phones, in whose text
PhoneNumberMatcher would find a number). Two implementations, with that same guarantee:
  * Hyperscan (Intel's multi-pattern regex engine; `hyperscan` has wheels for x86_64 and macOS).
    Each Detector has a `screen` pattern matching every text its regex matches: the regex without
    its lookarounds, `\\b` and possessive quantifiers, a trailing `{n,}` cut to `{n}`, sometimes a
    prefix dropped too (a class in front of a literal, as in `[A-Za-z0-9._%+-]@`, would multiply
    the literals Hyperscan looks for and slow every scan). Where Hyperscan's notions differ from
    Python's they are spelled out (`_hyperscan_syntax`): `\\d` and `\\s` as the exact sets Python's
    `re` uses (its \\d has Unicode digits Hyperscan's tables lack; its \\s includes \\x1c-\\x1f),
    and letters in `(?i:...)` as every character `re` folds onto them (ſ for s, ı and İ for i, the
    Kelvin sign for k) instead of Hyperscan's caseless mode. All the patterns are compiled into one
    database, lazily, once per process and region; one scan of the text's UTF-8 reports which
    occur. For clean text none does, several times faster than the triggers (docs/benchmarks.md).
    A text that is not valid UTF-8 (lone surrogates) goes to the triggers.
  * Python triggers, where `import hyperscan` fails (Linux aarch64 has no wheel): each detector's
    `trigger` tests cheap facts about the text (`Shape`: substrings, runs of byte classes, worked
    out in C) that its regex implies.
Phones are screened by what PhoneNumberMatcher's own pattern and phonenumbers' metadata imply about
a number it finds (see `_phone_pattern`, `_phone_digits`): digits (any Unicode decimal digit, or x)
in blocks separated by at most 4 of its punctuation characters — dashes and hyphens of many widths,
'/', '.', '~', brackets, spaces including no-break and zero-width ones, x — at least 7 of them for a
national number with region US (Canada's 310-xxxx numbers are valid), at least 6 after a plus sign
(+43 1110 is a valid Austrian number).
"""

import array
import bisect
import functools
import hashlib
import ipaddress
import itertools
import operator
import os
import platform
import re
import string
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import phonenumbers
from phonenumbers.phonenumbermatcher import _LEAD_LIMIT, _PUNCTUATION_LIMIT
from phonenumbers.phonenumberutil import _PLUS_CHARS, _VALID_PUNCTUATION

try:
    import hyperscan
except ImportError:  # no wheel for this platform: the Python triggers screen instead
    hyperscan = None

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
        if self._utf8 is None:  # surrogatepass: a lone surrogate's bytes are non-ASCII, as any other's
            self._utf8 = self.text.encode("utf-8", "surrogatepass")
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
_DIGIT_CLASS = _byte_class(_DIGITS)  # (non-ASCII bytes count too: `\d` takes other scripts' digits)
_IBAN_CLASS = _byte_class(_DIGITS, dict.fromkeys(string.ascii_uppercase, "A"))  # its start: AAxx
_RUNS = {n: b"x" * n for n in (4, 13, 32)}

# The length of an IBAN in each country that has them (SWIFT's IBAN registry): a code of a country
# not listed, or a different length, is not an IBAN.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29,
    "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}


@dataclass(frozen=True)
class Detector:
    """One kind of PII, and two cheap necessary conditions for its regex to match (see the module
    docstring): `screen`, a Hyperscan pattern matching every text `pattern` matches, written like a
    Python regex whose `\\d`, `\\s` and `(?i:...)` `_hyperscan_syntax` spells out; and `trigger`, a
    test of the text's Shape, for where Hyperscan is not installed."""

    kind: str
    pattern: re.Pattern
    screen: str
    trigger: Callable[[Shape], bool]


def _person_trigger(s: Shape) -> bool:
    return "name" in s.lower or _HONORIFIC.search(s.text) is not None


# The honorific branch of the PERSON pattern, without its leading \b: an alternation of literals,
# so the engine only tries the positions holding M, D, P or S.
_HONORIFIC = re.compile("(?:" + "|".join(_HONORIFICS) + r")\.? ")
DETECTORS = [
    Detector("SECRET", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
             r"-----BEGIN [A-Z ]*PRIVATE KEY-----", lambda s: "PRIVATE KEY" in s.text),
    # After "sk-", every character the regex takes is one of [A-Za-z0-9_-], at least 16 of them.
    Detector("SECRET", re.compile(r"\b(?:sk|pk|rk)-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_-]{16,}"),
             r"[spr]k-[A-Za-z0-9_-]{16}", lambda s: "k-" in s.text),
    Detector("SECRET", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),
             r"A(?:KI|SI)A[A-Z0-9]{16}", lambda s: "AKIA" in s.text or "ASIA" in s.text),
    Detector("SECRET", re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}\b|\bgithub_pat_[A-Za-z0-9_]{40,}"),
             r"gh[pousr]_[A-Za-z0-9]{30}|github_pat_[A-Za-z0-9_]{40}",
             lambda s: "_" in s.text and ("gh" in s.text or "github_pat_" in s.text)),
    Detector("SECRET", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
             r"xox[abprs]-[A-Za-z0-9-]{10}", lambda s: "xox" in s.text),
    Detector("SECRET", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
             r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8}", lambda s: "eyJ" in s.text),
    Detector("SECRET", re.compile(r"(?i:\bbearer)\s+[A-Za-z0-9._~+/=-]{16,}"),
             r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]{16}", lambda s: "bearer" in s.lower),
    Detector(
        "SECRET",
        re.compile(r"(?i:\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|token)\b\s*[:=]\s*)"
                   r"[^\s\"',;]{6,}"),
        r"(?i:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|token)\s*[:=]\s*[^\s\"',;]{6}",
        lambda s: ("=" in s.text or ":" in s.text) and any(k in s.lower for k in _SECRET_KEYWORDS),
    ),
    # Long hex (>=32) or base64-like (>=40) runs; `_looks_secret` keeps only the ones that are.
    Detector("SECRET", re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{32,}+={0,2}"),
             r"[A-Za-z0-9+/]{32}", lambda s: s.has_run(_BASE64_CLASS, 32)),
    Detector("EMAIL", re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]++@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
                                 r"\.[A-Za-z]{2,}\b"),
             r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2}", lambda s: "@" in s.text),
    Detector("IP_ADDRESS", re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)"),
             r"(?:\d{1,3}\.){3}\d", lambda s: s.has(_IPV4_CLASS, b"x.x")),
    Detector("IP_ADDRESS", re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{1,4}:){2,7}:?[0-9A-Fa-f]{0,4}"
                                      r"(?::[0-9A-Fa-f]{1,4})*(?![0-9A-Fa-f:])"),
             r":[0-9A-Fa-f]{1,4}:", lambda s: s.text.count(":") >= 2),
    # ddd-dd-dddd; the ranges never issued are left to `_validated`.
    Detector("US_SSN", re.compile(r"(?<![\d-])\d{3}([- ])\d{2}\1\d{4}(?![\d-])"),
             r"\d{3}[- ]\d{2}[- ]\d{4}", lambda s: s.has_run(_DIGIT_CLASS, 4)),
    # A country code, check digits, then 11-30 letters and digits, single spaces allowed between them (groups of
    # four); `_iban` cuts the match to the country's length and checks mod 97. Before cards: an IBAN's digits
    # could pass the Luhn check.
    Detector("IBAN", re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}"),
             r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11}", lambda s: s.has(_IBAN_CLASS, b"AAxx")),
    Detector("CREDIT_CARD", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"),
             r"\d(?:[ -]?\d){12}", lambda s: s.has_run(_CARD_CLASS, 13)),
    Detector(
        "PERSON",
        re.compile(r"(?:\b(?:" + "|".join(_HONORIFICS) + r")\.? |(?i:\bmy name is )|(?i:\bname): )"
                   f"(?P<person_name>{_NAME_WORDS})"),
        r"(?:(?:" + "|".join(_HONORIFICS) + r")\.? |(?i:my name is )|(?i:name): )[A-Z][a-z'-]",
        _person_trigger,
    ),
]
PHONE = len(DETECTORS)  # the phone matcher's place among the candidates: after every detector
_NONE: frozenset[int] = frozenset()

Screen = Callable[[str], frozenset[int]]  # a text → the candidates: indices into DETECTORS, and PHONE


# The phone screen. PhoneNumberMatcher finds candidates with one pattern: up to _LEAD_LIMIT leading
# "(", "[" or plus signs (each followed by punctuation), then blocks of digits (\d: any Unicode decimal
# digit) separated by up to _PUNCTUATION_LIMIT characters of _VALID_PUNCTUATION (case-insensitive, so
# x and X), then an optional extension; it then parses substrings of those. So the digits of a number
# it finds are such a chain of blocks in the text. Only x and X among letters can be in a candidate,
# and phonenumbers may read them as digits (a keypad's 9) — the screen counts them as digits as well
# as punctuation. How many digits, at least, is read from phonenumbers' metadata (_phone_digits).
_PHONE_GAP = int(re.fullmatch(r"\{0,(\d+)\}", _PUNCTUATION_LIMIT)[1])
_PHONE_LEAD_ROOM = int(re.fullmatch(r"\{0,(\d+)\}", _LEAD_LIMIT)[1]) * (_PHONE_GAP + 1) - 1  # plus sign → digit
_PHONE_PUNCT = f"[{_VALID_PUNCTUATION}]"  # a Python class, used with re.IGNORECASE as the matcher does


def _phone_pattern(digit: str, punct: str, plus: str, national: int, with_plus: int) -> str:
    """A regex matching every text in which phonenumbers finds a number: `with_plus` digits after a plus sign,
    or `national` digits, in blocks separated by at most _PHONE_GAP punctuation characters."""
    return (f"{plus}(?:{punct}|{plus}){{0,{_PHONE_LEAD_ROOM}}}{digit}(?:{punct}{{0,{_PHONE_GAP}}}{digit})"
            f"{{{with_plus - 1}}}|{digit}(?:{punct}{{0,{_PHONE_GAP}}}{digit}){{{national - 1}}}")


@functools.cache
def _phone_digits(region: str) -> tuple[int, int]:
    """The fewest digits a text must hold for PhoneNumberMatcher(text, region, VALID) to find a number in it:
    (written without a plus sign, written with one). A valid number's national part has one of the lengths
    its country's metadata allows — less the digits a national-prefix transform rule may add (Antigua's
    "268\\1" makes 7 typed digits a 10-digit number) — after a country code when there is a plus sign (or
    an international prefix, at least one more digit)."""
    def fewest(cc: int, parsed_with) -> int:
        lengths = [n for r in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(cc, ())
                   if (md := phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(cc, r)) is not None
                   for desc in (md.general_desc, md.fixed_line, md.mobile, md.toll_free, md.premium_rate,
                                md.shared_cost, md.personal_number, md.voip, md.pager, md.uan, md.voicemail)
                   if desc is not None for n in desc.possible_length or () if n > 0]
        rule = (parsed_with.national_prefix_transform_rule or "") if parsed_with is not None else ""
        if len(re.findall(r"\\\d", rule)) > 1:  # a group repeated: no bound worth having
            return 1
        return max(1, min(lengths, default=1) - len(re.findall(r"\d", re.sub(r"\\\d", "", rule))))

    def main(cc: int):  # metadata of the region parse uses for a number with this country code
        return phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
            cc, phonenumbers.region_code_for_country_code(cc))

    with_plus = min(len(str(cc)) + fewest(cc, main(cc)) for cc in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    cc = phonenumbers.country_code_for_region(region)
    national = 1 + with_plus  # an international prefix, then a country code and a national number
    if cc:
        national = min(national, fewest(cc, phonenumbers.PhoneMetadata.metadata_for_region(region)),
                       len(str(cc)) + fewest(cc, main(cc)))  # the region's own country code typed first
    return national, with_plus


def _phone_gate(region: str) -> Callable[[Shape], bool]:
    """The phone screen in Python, for the triggers: a run of bytes that could be a number, then the pattern."""
    national, with_plus = _phone_digits(region)
    pattern = re.compile(_phone_pattern(r"[\dxX]", _PHONE_PUNCT, f"[{_PLUS_CHARS}]", national, with_plus),
                         re.IGNORECASE)
    members = "".join(c for c in map(chr, range(128)) if re.fullmatch(_PHONE_PUNCT, c, re.IGNORECASE))
    table, run = _byte_class(_DIGITS + "xX" + _PLUS_CHARS + members), b"x" * min(national, with_plus + 1)
    return lambda s: s.has(table, run) and pattern.search(s.text) is not None


@functools.cache
def _trigger_screen(region: str) -> Screen:
    """The screen without Hyperscan: each detector's trigger, and the phone gate."""
    triggers = [(i, d.trigger) for i, d in enumerate(DETECTORS)]
    may_hold_phone = _phone_gate(region)

    def candidates(text: str) -> frozenset[int]:
        shape = Shape(text)
        found = [i for i, trigger in triggers if trigger(shape)]
        if may_hold_phone(shape):
            found.append(PHONE)
        return frozenset(found) if found else _NONE

    return candidates


@dataclass(frozen=True)
class _PythonSets:
    """Python `re`'s character sets, as the inside of Hyperscan classes (`\\x{..}` ranges)."""

    digit: str  # \d
    space: str  # \s
    folds: dict[str, str]  # a lower-case ASCII letter → every character (?i:letter) matches
    phone_punct: str  # _PHONE_PUNCT under IGNORECASE


def _ranges(chars: Iterable[str]) -> str:
    points = sorted({ord(c) for c in chars})
    spans = []
    for p in points:
        if spans and spans[-1][1] == p - 1:
            spans[-1][1] = p
        else:
            spans.append([p, p])
    return "".join(f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in spans)


@functools.cache
def _python_sets() -> _PythonSets:
    """Asks `re` itself, over every code point UTF-8 can carry (once a process)."""
    points = array.array("I", range(0xD800))  # every code point but the surrogates, as one str
    points.extend(range(0xE000, sys.maxunicode + 1))
    every = points.tobytes().decode(f"utf-32-{'le' if sys.byteorder == 'little' else 'be'}")
    cased = re.findall(r"(?i)[a-z]", every)
    return _PythonSets(
        digit=_ranges(re.findall(r"\d", every)),
        space=_ranges(re.findall(r"\s", every)),
        folds={a: _ranges(c for c in cased if re.fullmatch(f"(?i:{a})", c)) for a in string.ascii_lowercase},
        phone_punct=_ranges(re.findall(_PHONE_PUNCT, every, re.IGNORECASE)),
    )


def _hyperscan_syntax(screen: str, sets: _PythonSets) -> str:
    """A Detector's screen in Hyperscan's syntax: `\\d` and `\\s` (in or out of a class) become Python's sets,
    ASCII letters inside `(?i:...)` (outside classes) the class of characters Python folds onto them."""
    out, i, in_class, folded = [], 0, False, []  # folded: the depths of the open (?i: groups
    depth = 0
    while i < len(screen):
        ch = screen[i]
        if ch == "\\":
            escape = screen[i : i + 2]
            body = {r"\d": sets.digit, r"\s": sets.space}.get(escape)
            out.append(escape if body is None else body if in_class else f"[{body}]")
            i += 2
            continue
        if in_class:
            if folded and ch in string.ascii_letters:
                raise ValueError(f"a letter in a class inside (?i:...) is not supported: {screen!r}")
            in_class = ch != "]"
            out.append(ch)
        elif ch == "[":
            in_class = True
            out.append(ch)
        elif screen.startswith("(?i:", i):
            folded.append(depth)
            depth += 1
            out.append("(?:")
            i += 4
            continue
        elif ch == "(":
            depth += 1
            out.append(ch)
        elif ch == ")":
            depth -= 1
            if folded and folded[-1] == depth:
                folded.pop()
            out.append(ch)
        elif folded and ch in string.ascii_letters:
            out.append(f"[{sets.folds[ch.lower()]}]")
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _screen_patterns(region: str) -> list[tuple[int, str]]:
    """(candidate, Hyperscan pattern) pairs: each detector's screen, and the phone screen."""
    sets = _python_sets()
    patterns = [(i, _hyperscan_syntax(d.screen, sets)) for i, d in enumerate(DETECTORS)]
    national, with_plus = _phone_digits(region)
    phone = _phone_pattern(f"[{sets.digit}xX]", f"[{sets.phone_punct}]", f"[{_ranges(_PLUS_CHARS)}]",
                           national, with_plus)
    return patterns + [(PHONE, phone)]


def _collect(pattern_id: int, start: int, end: int, flags: int, found: list[int]) -> None:
    found.append(pattern_id)


def _screen_database(region: str, *, every_match: bool = False) -> "hyperscan.Database":
    """The compiled screen: by default each pattern reports its first match in a scanned text only (one
    text, one question); with `every_match`, every match (screen_groups scans many texts at once).
    Compiling is slow, and every export worker process would pay for it: the serialized database is kept
    in the user's cache directory, keyed by everything it is built from (this file, phonenumbers'
    metadata, Python's character tables, Hyperscan, the CPU), and loading it is quick. A cache that
    cannot be read or written is recompiled, never trusted."""
    from importlib.metadata import version

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rlhf"
    key = hashlib.sha256(repr((Path(__file__).read_bytes(), phonenumbers.__version__, sys.version, version("hyperscan"),
                               platform.machine(), platform.processor(), region, every_match)).encode())
    path = cache / f"pii-screen-{key.hexdigest()[:32]}.hsdb"
    try:
        return hyperscan.loadb(path.read_bytes(), hyperscan.HS_MODE_BLOCK)
    except (OSError, hyperscan.error):
        pass
    patterns = _screen_patterns(region)
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=[p.encode() for _, p in patterns], ids=[i for i, _ in patterns],
               flags=hyperscan.HS_FLAG_UTF8 | (0 if every_match else hyperscan.HS_FLAG_SINGLEMATCH))
    try:
        cache.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(hyperscan.dumpb(db))
        partial.replace(path)  # whole or not at all
    except OSError:
        pass
    return db


@functools.cache
def _scanner(region: str, every_match: bool) -> Callable[[bytes, Callable, list], None]:
    """A scan with the compiled screen (_screen_database), reporting to `on_match` with `found` as its
    context. Each thread gets its own scratch space, as Hyperscan requires."""
    db = _screen_database(region, every_match=every_match)
    threads = threading.local()

    def scan(data: bytes, on_match: Callable, found: list) -> None:
        try:
            scratch = threads.scratch
        except AttributeError:
            scratch = threads.scratch = hyperscan.Scratch(db)
        db.scan(data, on_match, 0, found, scratch)  # positional: parsing keywords costs more than the scan

    return scan


@functools.cache
def _hyperscan_screen(region: str) -> Screen:
    """All the screen patterns in one Hyperscan database, scanned once per text."""
    scan, triggers = _scanner(region, False), _trigger_screen(region)

    def candidates(text: str) -> frozenset[int]:
        try:
            data = text.encode()
        except UnicodeEncodeError:  # lone surrogates: not UTF-8, which HS_FLAG_UTF8 requires of the input
            return triggers(text)
        found: list[int] = []
        scan(data, _collect, found)
        return frozenset(found) if found else _NONE

    return candidates


def _screen_for(region: str) -> Screen:
    return _hyperscan_screen(region) if hyperscan is not None else _trigger_screen(region)


def _collect_end(pattern_id: int, start: int, end: int, flags: int, ends: list[int]) -> None:
    ends.append(end)


def screen_groups(texts: list[str], size: int, region: str = DEFAULT_REGION) -> set[int]:
    """Which groups of `size` consecutive texts (numbered from 0) the screen finds candidates in: what
    screening each group's texts joined by NUL tells, at a fraction of the cost for many small groups
    (the rows of an export) — all the texts joined by NUL, one Hyperscan scan, every match's end
    mapped back to its text. A match that runs from one group's texts into the next (NUL joins them)
    only flags one group more; every match within a group's texts is found."""
    joined = "\x00".join(texts)
    try:
        data = joined.encode() if hyperscan is not None else None
    except UnicodeEncodeError:  # lone surrogates: not UTF-8, which the scan needs
        data = None
    if data is None:  # each group screened on its own
        screen = _screen_for(region)
        return {g for g in range(len(texts) // size) if screen("\x00".join(texts[g * size:(g + 1) * size]))}
    ends: list[int] = []
    _scanner(region, True)(data, _collect_end, ends)
    if not ends:
        return set()
    sizes = map(len, texts) if len(data) == len(joined) else map(len, map(str.encode, texts))  # in bytes
    starts = [0, *itertools.accumulate(map(operator.add, sizes, itertools.repeat(1)))]  # each text's first byte
    # a match ending at byte `end` (exclusive) ends in the text holding byte end - 1 (or in the NUL after it)
    return {(bisect.bisect_right(starts, end - 1) - 1) // size for end in ends}


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


def ssn_valid(digits: str) -> bool:
    """Whether nine digits are a Social Security number the SSA could have issued."""
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def iban_valid(iban: str) -> bool:
    """ISO 13616: the registry's length for the country, and the number (first four characters moved to the
    end, letters as 10-35) leaves 1 when divided by 97."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isascii() or not iban.isalnum():
        return False
    return int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 == 1


def _iban(value: str) -> tuple[str, int] | None:
    """The IBAN a match of the IBAN pattern starts with, and how many of its characters that takes (the match
    may run on into the next word); None if it holds none."""
    length = IBAN_LENGTHS.get(value[:2])
    if length is None:
        return None
    taken = 0
    for end, ch in enumerate(value, 1):
        taken += ch != " "
        if taken == length:
            compact = value[:end].replace(" ", "")
            return (compact, end) if iban_valid(compact) else None
    return None


def _validated(kind: str, value: str) -> str | None:
    """The canonical form of a candidate (same value, same placeholder), or None if it is not PII."""
    if kind == "SECRET":
        return value if _looks_secret(value) else None
    if kind == "CREDIT_CARD":
        digits = re.sub(r"\D", "", value)
        return digits if luhn_valid(digits) else None  # not a card; the phone matcher may still take it
    if kind == "IP_ADDRESS":
        return str(ipaddress.ip_address(value)) if _is_ip(value) else None
    if kind == "US_SSN":
        digits = "".join(str(int(c)) for c in value if c.isdigit())  # any script's digits, as ASCII
        return f"{digits[:3]}-{digits[3:5]}-{digits[5:]}" if ssn_valid(digits) else None
    if kind == "EMAIL":
        return value.lower()
    return value


class Masker:
    """Masks PII in text; one instance per dataset export, so placeholders are consistent within it."""

    def __init__(self, region: str = DEFAULT_REGION, *, screen: Screen | None = None):
        """`screen` picks the candidates (tests compare them); by default Hyperscan's, else the triggers."""
        self.region = region
        self._screen = screen or _screen_for(region)
        self.counts: Counter[str] = Counter()
        self._placeholders: dict[tuple[str, str], str] = {}
        self._numbers: Counter[str] = Counter()
        self._kind = ""

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
        screen = self._screen
        candidates = screen(text)
        if not candidates:
            return text
        for i, detector in enumerate(DETECTORS):
            if i in candidates:
                self._kind = detector.kind
                masked = detector.pattern.sub(self._replace, text)
                if masked != text:  # what the next detectors are screened against must be the text they will scan
                    text = masked
                    candidates = screen(text)
        if PHONE in candidates:
            return self._mask_phones(text)
        return text

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
        if kind == "IBAN":  # the IBAN the match starts with; what follows it stays
            found = _iban(value)
            return value if found is None else self.placeholder(kind, found[0]) + value[found[1]:]
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


def pii_kinds(text: str, region: str = DEFAULT_REGION) -> list[str]:
    """The kinds of personal data or secrets the export's masking would replace in `text` (empty: none)."""
    masker = Masker(region)
    masker.mask(text)
    return sorted(masker.counts)
