"""SECURITY.md says how to report a problem and names every kind of personal data the export masks."""

from pathlib import Path

from shared import pii

SECURITY = Path(__file__).parents[2] / "SECURITY.md"
# How SECURITY.md names each kind the masker replaces (a new kind must be documented there).
NAMED = {"EMAIL": "email addresses", "PHONE": "phone numbers", "CREDIT_CARD": "card", "IP_ADDRESS": "IP addresses",
         "SECRET": "API keys", "PERSON": "names after strong cues", "US_SSN": "Social Security numbers",
         "IBAN": "IBANs"}


def test_security_md_names_a_private_way_to_report_and_every_masked_kind():
    text = " ".join(SECURITY.read_text().split())
    assert "security@betabase.dev" in text and "private vulnerability reporting" in text
    kinds = {d.kind for d in pii.DETECTORS} | {"PHONE"}
    assert kinds <= set(NAMED), sorted(kinds - set(NAMED))
    assert not [name for name in NAMED.values() if name not in text]
