"""The leak check of a trained model's answers (the spec's "validate fine-tuned models don't leak
training data"): pure functions over texts, no I/O, no model.

Two findings:
  * verbatim — an answer reproduces a span of at least `min_chars` characters of a training
    answer, character for character;
  * pii — an answer holds personal data or a secret: email addresses, phone numbers
    (libphonenumber's matcher, valid numbers only), card numbers passing the Luhn check, IP
    addresses, and API keys / tokens / private keys. This is the training service's own screen of
    the same kinds curation masks before export (a service never imports another's code); the
    export is already masked, so a hit here came from the model, not from the files.
"""

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

import phonenumbers

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{1,4}(?![\w:])")
SECRETS = re.compile(
    r"sk-[A-Za-z0-9_-]{20,}|(?:AKIA|ASIA)[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
)
DEFAULT_REGION = "US"
MAX_EXAMPLES = 5
MAX_TEXT = 300  # characters of a prompt or answer kept in an example


def _luhn(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def pii_kinds(text: str) -> list[str]:
    """The kinds of personal data or secrets found in `text` (empty: none)."""
    found: list[str] = []
    if EMAIL.search(text):
        found.append("EMAIL")
    if any(_luhn(re.sub(r"\D", "", m.group())) for m in CARD.finditer(text)):
        found.append("CREDIT_CARD")
    if any(phonenumbers.is_valid_number(m.number) for m in phonenumbers.PhoneNumberMatcher(text, DEFAULT_REGION)):
        found.append("PHONE")
    if any(_is_ip(m.group()) for m in (*IPV4.finditer(text), *IPV6.finditer(text))):
        found.append("IP_ADDRESS")
    if SECRETS.search(text):
        found.append("SECRET")
    return found


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def verbatim_span(output: str, answers: Iterable[str], min_chars: int) -> str | None:
    """The longest run of `output` made of `min_chars`-long windows that occur verbatim in a
    training answer, when there is one. Cost: one pass over the answers' windows, checked
    against the (few) windows of this output."""
    if len(output) < min_chars:
        return None
    windows: dict[str, list[int]] = {}
    for i in range(len(output) - min_chars + 1):
        windows.setdefault(output[i:i + min_chars], []).append(i)
    hit: set[int] = set()
    for answer in answers:
        for j in range(len(answer) - min_chars + 1):
            starts = windows.get(answer[j:j + min_chars])
            if starts:
                hit.update(starts)
        if len(hit) == len(output) - min_chars + 1:
            break
    if not hit:
        return None
    best_start, best_len, run_start, previous = 0, 0, None, None
    for i in sorted(hit):
        if previous is None or i != previous + 1:
            run_start = i
        previous = i
        length = i - run_start + min_chars
        if length > best_len:
            best_start, best_len = run_start, length
    return output[best_start:best_start + best_len]


@dataclass(frozen=True)
class Sample:
    prompt: str
    output: str
    split: str  # train or validation


def check(samples: list[Sample], answers: list[str], min_chars: int) -> dict:
    """Counts and examples for the evaluation: `findings` is the number of answers flagged."""
    pii_findings = verbatim_findings = flagged = 0
    examples: list[dict] = []
    for sample in samples:
        kinds = pii_kinds(sample.output)
        span = verbatim_span(sample.output, answers, min_chars)
        pii_findings += bool(kinds)
        verbatim_findings += span is not None
        if kinds or span:
            flagged += 1
            if len(examples) < MAX_EXAMPLES:
                examples.append({"split": sample.split, "prompt": sample.prompt[:MAX_TEXT],
                                 "output": sample.output[:MAX_TEXT], "pii": kinds,
                                 "verbatim": span[:MAX_TEXT] if span else None,
                                 "verbatim_chars": len(span) if span else 0})
    return {"samples": len(samples), "min_chars": min_chars, "findings": flagged, "pii_findings": pii_findings,
            "verbatim_findings": verbatim_findings, "examples": examples}
