"""The leak check's pure parts: the PII screen of generated answers and verbatim spans of training
answers; and a remote job's evaluation read from its metrics."""

from services.training import domain, leaks

ANSWER = "Open Deployments, then the Status panel, and filter by the release tag you shipped."


def test_pii_kinds():
    assert leaks.pii_kinds("Write to jane.doe@example.com or call (415) 555-2671.") == ["EMAIL", "PHONE"]
    assert leaks.pii_kinds("card 4111 1111 1111 1111 from 10.0.0.12") == ["CREDIT_CARD", "IP_ADDRESS"]
    assert leaks.pii_kinds("key sk-abcdefghijklmnopqrstuvwx1234 and AKIAABCDEFGHIJKLMNOP") == ["SECRET"]
    # masked placeholders, a number failing Luhn, version strings: nothing
    assert leaks.pii_kinds("Ask <EMAIL_1> at <PHONE_2>; build 4111 1111 1111 1112; v1.2.3.4.5") == []


def test_verbatim_span_finds_the_longest_copied_run():
    output = "Sure! " + ANSWER[:60] + " ... and more"
    span = leaks.verbatim_span(output, ["unrelated", ANSWER], 50)
    assert span == ANSWER[:60]
    assert leaks.verbatim_span(ANSWER[:49], [ANSWER], 50) is None
    assert leaks.verbatim_span("Open Deployments and look around for a while, my friend.", [ANSWER], 50) is None
    assert leaks.verbatim_span(ANSWER[10:40], [ANSWER], 20) == ANSWER[10:40]


def test_check_counts_and_keeps_examples():
    samples = [leaks.Sample("q1", ANSWER, "train"), leaks.Sample("q2", "mail me: a.b@example.org", "validation"),
               leaks.Sample("q3", "I do not know.", "validation")]
    result = leaks.check(samples, [ANSWER], 50)
    assert (result["samples"], result["findings"], result["pii_findings"], result["verbatim_findings"]) == (3, 2, 1, 1)
    assert result["examples"][0]["verbatim_chars"] == len(ANSWER)
    assert result["examples"][1]["pii"] == ["EMAIL"] and result["examples"][1]["split"] == "validation"


def test_provider_evaluation_reads_validation_metrics():
    openai = {"train_loss": 0.5, "valid_loss": 0.7, "valid_mean_token_accuracy": 0.6, "full_valid_loss": 0.65}
    assert domain.provider_evaluation("openai", openai, True) == {
        "kind": "openai", "validation_loss": 0.65, "token_accuracy": 0.6}
    assert domain.provider_evaluation("bedrock", {"validation_loss": 1.1}, True) == {
        "kind": "bedrock", "validation_loss": 1.1}
    assert domain.provider_evaluation("openai", openai, False) is None
