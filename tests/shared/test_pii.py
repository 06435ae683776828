"""PII masking, pure: each kind found, look-alikes left alone, placeholders consistent."""

import platform
import random
import sys

import phonenumbers
import pytest

from shared import pii
from shared.pii import Masker

try:
    import hyperscan
except ImportError:
    hyperscan = None


def _unscreened(text: str) -> frozenset[int]:
    """A screen that rules nothing out: every detector's regex and the phone matcher run (the full check)."""
    return frozenset(range(pii.PHONE + 1))


def _matching(text: str, region: str = pii.DEFAULT_REGION) -> frozenset[int]:
    """The detectors whose regex matches `text` anywhere (validated or not), and PHONE if the phone matcher
    finds a number: what every screen's candidates must include."""
    found = {i for i, d in enumerate(pii.DETECTORS) if d.pattern.search(text)}
    if phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID).has_next():
        found.add(pii.PHONE)
    return frozenset(found)


def test_each_kind_is_masked_consistently():
    m = Masker()
    text = ("Mail Jane.Roe@Example.com or jane.roe@example.com, call +44 20 7946 0958 or (415) 555-0132; "
            "card 4111-1111-1111-1111 from 10.0.0.1 and 2001:db8::1. Key sk-live-abcdefghijklmnop12345, "
            "AKIAIOSFODNN7EXAMPLE, Authorization: Bearer eyJhbGciOiJIUzI1NiJ9abcdefghijkl, password=hunter2hunter2. "
            "Regards, Mr. John Smith")
    masked = m.mask(text)
    for secret in ("Jane.Roe", "7946", "555-0132", "4111", "10.0.0.1", "2001:db8", "sk-live", "AKIA", "eyJhb",
                   "hunter2", "John Smith"):
        assert secret not in masked, secret
    assert masked.count("<EMAIL_1>") == 2
    assert set(m.counts) == {"EMAIL", "PHONE", "CREDIT_CARD", "IP_ADDRESS", "SECRET", "PERSON"}
    assert m.mask("write to jane.roe@example.com") == "write to <EMAIL_1>"  # same value, same placeholder


def test_national_identifiers_are_masked_when_they_could_be_real():
    """US Social Security numbers outside the ranges never issued, and IBANs of the registry's length for their
    country whose mod-97 check passes; look-alikes stay."""
    m = Masker()
    text = ("My SSN is 123-45-6789 (or 536 90 4399?) and my IBAN DE89 3704 0044 0532 0130 00; wire to "
            "GB82WEST12345698765432, NL91 ABNA 0417 1643 00 or MT84 MALT 0110 0001 2345 MTLC AST0 01S today.")
    masked = m.mask(text)
    assert masked == ("My SSN is <US_SSN_1> (or <US_SSN_2>?) and my IBAN <IBAN_1>; wire to "
                      "<IBAN_2>, <IBAN_3> or <IBAN_4> today."), masked
    assert m.mask("ssn 123 45 6789, iban DE89370400440532013000") == "ssn <US_SSN_1>, iban <IBAN_1>"
    assert m.mask("DE89 3704 0044 0532 0130 00 ABCD 1234") == "<IBAN_1> ABCD 1234"  # what follows it stays
    assert m.summary()["US_SSN"] == {"occurrences": 3, "distinct": 2}
    assert pii.pii_kinds("send it to FR14 2004 1010 0505 0001 3M02 606, SSN 078-05-1120") == ["IBAN", "US_SSN"]
    for look_alike in (
        "000-12-3456", "666-12-3456", "900-12-3456", "123-00-4567", "123-45-0000",  # never issued
        "123-45 6789", "1123-45-6789", "123-45-67890", "2024-11-05", "ticket 123-456-7890",
        "DE89 3704 0044 0532 0130 01", "DE89 3704 0044 0532 0130", "ZZ89 3704 0044 0532 0130 00",  # check, length
        "AB12 3456 7890 1234 5678", "SKU XY12ABCDEFGHIJKLMNOP", "ISO 8601 and RFC 3339",
    ):
        assert m.mask(look_alike) == look_alike, look_alike
        assert pii.pii_kinds(look_alike) == [], look_alike


def test_look_alikes_are_left_alone():
    m = Masker()
    text = "Version 3.11.2 shipped on 2024-11-05 with 1234 tests; order 4111-1111-1111-1112 is not a card."
    assert m.mask(text) == text
    assert m.mask("ping 192.168.1.20.") == "ping <IP_ADDRESS_1>."


def test_quick_screen_never_hides_what_the_patterns_find():
    """Most texts are ruled out by cheap checks before any pattern runs; text around the PII that is
    not ASCII, and letters the case-insensitive patterns fold onto ASCII (ſ, ı, İ), must not fool them."""
    m = Masker()
    prose = "日本語のテキスト — café ☕ " * 20
    for sample in ("jane.roe@example.com", "+1 415-555-0132", "4111 1111 1111 1111", "10.20.30.40", "2001:db8::1",
                "sk-proj-9fQe2Lk7Xb3Vn8Wm1Zt4Rs6Yp0Ua5Cd", "ſecret=hunter2hunter2", "apİ_key=hunter2hunter2",
                "d41d8cd98f00b204e9800998ecf8427e", "Dr. Margaret Hamilton"):
        text = f"{prose}{sample}\x00{prose}"
        assert m.mask(text) != text, sample
        assert sample.split("=")[-1].split(". ")[-1] not in m.mask(text), sample
    clean = "Deploy the service to staging, then restart worker 12 on node 3 and check the logs. " * 10
    assert m.mask(clean) == clean


# --- the screen: which detectors are worth running on a text ---------------------------------------------------

def _screen(name: str) -> pii.Screen:
    """The screen under test. Hyperscan has wheels for x86_64 and macOS and is a dependency there, so on those
    platforms it must import and be the Masker's screen: the test fails, it does not skip."""
    if name == "triggers":
        return pii._trigger_screen(pii.DEFAULT_REGION)
    if hyperscan is None:
        if platform.machine().lower() in ("x86_64", "amd64") or sys.platform == "darwin":
            pytest.fail("hyperscan has a wheel for this platform but does not import; the slow screen is in use")
        pytest.skip("no hyperscan wheel for this platform (the triggers screen is used)")
    screen = pii._screen_for(pii.DEFAULT_REGION)
    assert screen is pii._hyperscan_screen(pii.DEFAULT_REGION), "hyperscan imports, but the Masker does not use it"
    assert Masker()._screen is screen
    return screen


SCREENS = ["hyperscan", "triggers"]

# Each detector's PII (by index in DETECTORS; PHONE last), including what Python's `re` reads as digits, whitespace
# and case-folded letters beyond ASCII: Arabic-Indic, fullwidth, mathematical, Adlam and Tangsa digits; \x1c-\x1f
# and U+3000 as spaces; ſ, ı, İ and the Kelvin sign in case-insensitive keywords.
KINDS = {
    0: ["-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----"],
    1: ["sk-proj-9fQe2Lk7Xb3Vn8Wm1Zt4Rs6Yp0Ua5Cd", "rk-live-abcdefghijklmnop", "pk-" + "a-" * 3 + "x" * 16],
    2: ["AKIAIOSFODNN7EXAMPLE", "ASIA1234567890ABCDEF"],
    3: ["ghp_" + "a1B2" * 9, "github_pat_" + "x_Y9" * 11],
    4: ["xoxb-1234567890-abcdef"],
    5: ["eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abcdefghijklmnop"],
    6: ["Authorization: Bearer abcdefghijklmnop1234", "BEARER\u3000abcdefghijklmnop", "bearer\x1cabcdefghijklmnop=="],
    7: ["password=hunter2hunter2", "ſecret=hunter2hunter2", "apİ_key=hunter2hunter2", "ACCESS-\u212aEY",
        "api_\u212aey =  hunter2hunter2", "Pwd\x1f:\x1dvaluevalue", "toKen:abcde\u0307", "passwd=日本語のテキスト"],
    8: ["d41d8cd98f00b204e9800998ecf8427e", "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0123456789ab/+=="],
    9: ["jane.roe@example.com", "a@b.co", "x+tag@sub.example.org"],
    10: ["10.20.30.40", "١٠.٢٠.٣٠.٤٠", "\U0001e951.\U0001e952.\U0001e953.\U0001e954"],
    11: ["2001:db8::1", "fe80::1:2", "a:b:c"],
    12: ["123-45-6789", "536 90 4399", "١٢٣-٤٥-٦٧٨٩", "000-00-0000"],
    13: ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "MT84 MALT 0110 0001 2345 MTLC AST0 01S",
         "XX00 0000 0000 000"],
    14: ["4111 1111 1111 1111", "4111-1111-1111-1111", "４１１１１１１１１１１１１１１１", "\U00016ac1" * 13,
         "𝟒𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏"],
    15: ["Dr. Margaret Hamilton", "my name is Ada", "MY NAME İS Ada", "naMe: Grace", "Mr Smith", "Madam X"],
    pii.PHONE: ["+1 415-555-0132", "(415) 555-0132", "415/555/1234", "415．555．1234", "415 / 555 / 1234", "+43 1110",
                "310-1234", "４１５－５５５－１２３４", "+44\u00a020\u00a07946\u00a00958", "1xx415-555-1234",
                "＋44 20 7946 0958", "(+44) 20 7946 0958", "415\u2010555\u20111234", "415----555----1234"],
}
ASCII_PROSE = "Deploy the service to staging, then restart worker 12 on node 3 and check the logs."
OTHER_PROSE = "日本語のテキスト — café ☕ Ω"


def _pii_corpus() -> list[str]:
    texts = []
    for samples in KINDS.values():
        for s in samples:
            texts += [s, f"{ASCII_PROSE} {s}", f"{s} {ASCII_PROSE}", f"{OTHER_PROSE}{s}\x00{OTHER_PROSE}",
                      f"{ASCII_PROSE}\x00{s}\x00{ASCII_PROSE}", f"{OTHER_PROSE} {s}.", f"\ud800 {s}"]
    return texts


TOKENS = (list("0123456789" * 4) + list(" .-/:@=_+()[]~,;'\"x\t\n\x00") + list("aZkKsSiIeEyYnNmMrRdDpPtT")
          + ["ſ", "ı", "İ", "\u212a", "\u0307", "é", "日", "\uff0d", "\uff0f", "\uff0e", "\u00a0", "\u3000", "\x1c",
             "\u0663", "\uff14", "\U00016ac4"]
          + ["sk-", "AKIA", "ASIA", "ghp_", "github_pat_", "xoxb-", "eyJ", "bearer ", "Bearer\t", "password", "pwd",
             "secret", "api_key", "access-token", "token", "name: ", "my name is ", "Mr. ", "Dr ", "+1 ", "+",
             "-----BEGIN PRIVATE KEY-----", "-----END PRIVATE KEY-----", "Abcdefgh", "abcdef0123456789", "example.com",
             "DE89", "GB82 ", "WEST", "3704 ", "-45-", " 90 "])


def _random_corpus(n: int = 3000, seed: int = 7) -> list[str]:
    """Random token strings; every other one with a PII sample in the middle, randomly edited (near misses)."""
    rng = random.Random(seed)
    samples = [s for ss in KINDS.values() for s in ss]

    def noise() -> str:
        return "".join(rng.choice(TOKENS) for _ in range(rng.randint(0, 30)))

    texts = []
    for i in range(n):
        if i % 2:
            sample = list(rng.choice(samples))
            for _ in range(rng.randint(0, 3)):
                at = rng.randrange(len(sample) + 1)
                sample[at:at + rng.randint(0, 1)] = [rng.choice(TOKENS)] * rng.randint(0, 1)
            texts.append(noise() + "".join(sample) + noise())
        else:
            texts.append(noise() + noise())
    return texts


@pytest.mark.parametrize("name", SCREENS)
def test_phone_numbers_with_any_separator_the_matcher_accepts_are_masked(name):
    m = Masker(screen=_screen(name))
    assert m.mask("call 415/555/1234 now") == "call <PHONE_1> now"
    for number in ("415 / 555 / 1234", "415－555－1234", "415．555．1234", "+43 1110", "310-1234"):
        text = f"call {number} now"
        assert m.mask(text) != text, number


def test_the_phone_screen_reads_the_matcher_s_own_pattern():
    """The phone screen is built from phonenumbers' private constants; this is the pattern they must describe."""
    from phonenumbers.phonenumbermatcher import _LEAD_CLASS_CHARS, _LEAD_LIMIT, _PATTERN, _PUNCTUATION_LIMIT
    from phonenumbers.phonenumberutil import _VALID_PUNCTUATION

    punct = f"[{_VALID_PUNCTUATION}]{_PUNCTUATION_LIMIT}"
    lead = f"(?:[{_LEAD_CLASS_CHARS}]{punct}){_LEAD_LIMIT}"
    assert _PATTERN.pattern.startswith(f"{lead}\\d{{1,20}}(?:{punct}\\d{{1,20}})")


@pytest.mark.parametrize("name", SCREENS)
def test_the_screen_never_rules_out_a_detector_that_would_match(name):
    """Whatever a detector's regex (or the phone matcher) matches in a text, the screen names that detector: for
    every kind of PII in ASCII and other prose, at the edges of the text and next to NUL, and for random texts
    made of digits, separators and keyword fragments. Masking with the screen equals masking without one."""
    screen = _screen(name)
    for corpus in (_pii_corpus(), _random_corpus()):
        seen = set()
        for text in corpus:
            matching = _matching(text)
            assert matching <= screen(text), (text, sorted(matching - screen(text)))
            seen |= matching
        assert seen == set(range(pii.PHONE + 1))  # every detector was put to the test
    full, screened = Masker(screen=_unscreened), Masker(screen=screen)
    for text in _pii_corpus():
        assert screened.mask(text) == full.mask(text), text


def test_screening_rows_together_flags_each_row_that_holds_pii():
    """An export screens a stripe's rows in one scan (screen_groups): every row whose texts a detector's regex
    or the phone matcher would match is flagged — in ASCII and other prose, whatever comes before it — and
    clean rows are not."""
    clean = [ASCII_PROSE, OTHER_PROSE, ""]
    for samples in KINDS.values():
        for sample in samples:
            for at, field in ((0, 0), (1, 2), (7, 1), (8, 2)):  # the row holding it, and the text in that row
                for middle in (f"{ASCII_PROSE} {sample}", f"{OTHER_PROSE}{sample}", sample):
                    rows = [list(clean) for _ in range(9)]
                    rows[at][field] = middle
                    flagged = pii.screen_groups([t for row in rows for t in row], 3)
                    assert flagged <= {at}, (sample, at, middle, flagged)  # (a few samples are near misses)
                    assert at in flagged or not _matching(middle), (sample, at, middle)
    rng = random.Random(3)
    for corpus in (_random_corpus(600), _pii_corpus()):  # (the second has lone surrogates: each row on its own)
        texts = [rng.choice([t, t, "", ASCII_PROSE]) for t in corpus]
        texts += [""] * (-len(texts) % 3)
        flagged = pii.screen_groups(texts, 3)
        for g in range(len(texts) // 3):
            if any(_matching(t) for t in texts[3 * g:3 * g + 3]):
                assert g in flagged, texts[3 * g:3 * g + 3]
        assert len(flagged) < len(texts) // 3


def test_the_compiled_screen_is_cached_and_a_bad_cache_is_recompiled(tmp_path, monkeypatch):
    """Export workers load the compiled screen instead of compiling it; a damaged file is never used."""
    if hyperscan is None:
        pytest.skip("no hyperscan wheel for this platform (the triggers screen is used)")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    text = "mail jane.roe@example.com or call +1 415-555-0132"
    first = pii._screen_database("US")
    (cached,) = (tmp_path / "rlhf").glob("pii-screen-*.hsdb")
    patterns = pii._screen_patterns

    def not_again(region):
        raise AssertionError("compiled although the cache holds the database")

    monkeypatch.setattr(pii, "_screen_patterns", not_again)
    assert pii._screen_database("US").info() == first.info()  # loaded from the file
    monkeypatch.setattr(pii, "_screen_patterns", patterns)
    cached.write_bytes(b"not a database" + cached.read_bytes()[:1000])
    again = pii._screen_database("US")  # recompiled, and the file mended
    found: list[int] = []
    again.scan(text.encode(), pii._collect, 0, found, hyperscan.Scratch(again))
    assert {pii.DETECTORS.index(d) for d in pii.DETECTORS if d.kind == "EMAIL"} <= set(found)
    assert pii.PHONE in found
    assert hyperscan.loadb(cached.read_bytes(), hyperscan.HS_MODE_BLOCK).info() == first.info()
