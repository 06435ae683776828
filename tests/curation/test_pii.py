"""PII masking, pure: each kind found, look-alikes left alone, placeholders consistent."""

from services.curation.pii import Masker


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


def test_look_alikes_are_left_alone():
    m = Masker()
    text = "Version 3.11.2 shipped on 2024-11-05 with 1234 tests; order 4111-1111-1111-1112 is not a card."
    assert m.mask(text) == text
    assert not m.contains_pii(text)
    assert m.contains_pii("ping 192.168.1.20.")


def test_quick_screen_never_hides_what_the_patterns_find():
    """Most texts are ruled out by cheap checks before any pattern runs; text around the PII that is
    not ASCII, and letters the case-insensitive patterns fold onto ASCII (ſ, ı, İ), must not fool them."""
    m = Masker()
    prose = "日本語のテキスト — café ☕ " * 20
    for pii in ("jane.roe@example.com", "+1 415-555-0132", "4111 1111 1111 1111", "10.20.30.40", "2001:db8::1",
                "sk-proj-9fQe2Lk7Xb3Vn8Wm1Zt4Rs6Yp0Ua5Cd", "ſecret=hunter2hunter2", "apİ_key=hunter2hunter2",
                "d41d8cd98f00b204e9800998ecf8427e", "Dr. Margaret Hamilton"):
        text = f"{prose}{pii}\x00{prose}"
        assert m.contains_pii(text), pii
        assert pii.split("=")[-1].split(". ")[-1] not in m.mask(text), pii
    clean = "Deploy the service to staging, then restart worker 12 on node 3 and check the logs. " * 10
    assert not m.contains_pii(clean) and m.mask(clean) == clean
