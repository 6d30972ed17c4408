"""Generation-quality scorers: what counts as unfaithful or toxic, and `genaiops score`."""

from __future__ import annotations

import collections
import json
import random
import subprocess
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from steps.perturb import PERTURBATIONS
from steps.sample_data import generate_records
from steps.scoring import (
    FaithfulnessConfig,
    ScoringInputError,
    ToxicityConfig,
    faithfulness,
    minilm_encoder,
    read_records,
    score_records,
    toxicity,
)

BIN = Path(sys.executable).parent / "genaiops"
SOURCE = ("Hana: My card was blocked after I paid for a hotel in Lisbon.\n"
          "Dr. Priya Patel: I removed the hold on Tuesday. The fee is 12 dollars, refunded in seven days.\n"
          "Hana: Great, I accept.")


@pytest.fixture(scope="module")
def encoder() -> Callable[[Sequence[str]], Any]:
    return minilm_encoder()


def flagged(output: str, source: str = SOURCE, encoder: Any = None) -> list[tuple[str, str]]:
    [scored] = faithfulness([source], [output], encoder)
    assert scored.flagged == bool(scored.findings)
    assert 0 <= scored.score <= 1
    return [(f.kind, f.text) for f in scored.findings]


def test_names_written_differently_are_supported() -> None:
    # Case, a possessive, a first or last name for the full name, a title: the same people.
    assert flagged("Patel removes the hold on Hana's card.") == []
    assert flagged("Dr. Patel removed HANA's hold; priya says the fee is refunded.") == []
    assert flagged("Priya Patel’s team removed the hold in Lisbon on Tuesday.") == []


def test_invented_names_and_places_are_flagged_with_their_spans() -> None:
    [scored] = faithfulness([SOURCE], ["Ines removes the hold on Hana's card in Madrid."])
    assert [(f.kind, f.text) for f in scored.findings] == [("name", "Ines"), ("name", "Madrid")]
    assert scored.findings[0].start == 0 and scored.findings[1].end == len("Ines removes the hold on Hana's card in Madrid")
    assert scored.score < 1


def test_numbers_days_and_times_must_be_in_the_source() -> None:
    assert flagged("The fee is twelve dollars, refunded in 7 days.") == []  # words and digits agree
    assert flagged("The fee is 21 dollars.") == [("number", "21")]
    assert flagged("Patel removed the hold on Thursday.") == [("date", "Thursday")]
    assert flagged("Patel removed the hold tomorrow.") == [("date", "tomorrow")]
    assert flagged("The refund takes 3 days.") == [("number", "3")]


def test_words_that_look_like_dates_or_numbers_are_not_taken_for_them() -> None:
    assert flagged("Patel may double-check the hold, as the first step.") == []
    assert flagged("Patel removed the hold in May.") == [("date", "May")]


def test_clock_words_and_the_times_they_name_agree() -> None:
    source = "Mia: Lunch at 12pm on Friday?\nLeo: Yes, and the late train leaves at 00:00."
    assert flagged("Mia and Leo meet at noon on Friday.", source) == []
    assert flagged("They meet at midday; the train leaves at midnight.", source) == []
    assert flagged("They meet at 12 on Friday.", source) == []  # "12pm" is the number 12
    assert flagged("They meet at midnight on Friday.", "Mia: Lunch at 12pm on Friday?") == [("date", "midnight")]
    assert flagged("They meet at noon.", "Mia: Lunch at 1pm?") == [("date", "noon")]


def test_half_is_not_a_number_of_its_own() -> None:
    # "Half an hour earlier" for 8:30 instead of 9:00: worked out from the source's numbers, not a new one.
    assert flagged("The bus leaves half an hour earlier.", "Ana: The bus leaves at 8:30, not 9:00.") == []


def test_a_family_is_named_by_the_plural_of_its_name() -> None:
    source = "Mr. Yilmaz: We arrive on Friday.\nMrs. Yilmaz: With the kids. Greta: Welcome!"
    assert flagged("The Yilmazes arrive on Friday.", source) == []
    assert flagged("The Gretas arrive on Friday.", source) == []
    # Only a capitalised stem counts: "in" in the source does not make "Ines" a plural of it.
    assert flagged("Ines arrives on Friday.", "Tom: We check in on Friday.") == [("name", "Ines")]


def test_a_sentence_start_is_not_a_name_but_an_unknown_one_is() -> None:
    assert flagged("Because the hold was removed, Hana accepts.") == []
    assert flagged("Viktor removed the hold.") == [("name", "Viktor")]


def test_reversed_facts_and_unsupported_negations_are_flagged(encoder: Any) -> None:
    assert ("negation", "rejects") in flagged("Hana rejects the refund.", encoder=encoder)
    assert [k for k, _ in flagged("Dr. Patel did not remove the hold on Tuesday.", encoder=encoder)] == ["negation"]
    assert flagged("Dr. Patel removed the hold on Tuesday; the fee is refunded in seven days.", encoder=encoder) == []


def test_a_denial_is_checked_against_the_answer_and_its_own_clause(encoder: Any) -> None:
    source = ("Member (Lucas Ferreira): I'm moving to Leeds, so I need to cancel my membership.\n"
              "Agent (Chloe Martin): I can do that for you today.\n"
              "Member (Lucas Ferreira): Is there a fee for cancelling early?\n"
              "Agent (Chloe Martin): No, there's nothing to pay. Your last payment is on the 30th.\n"
              "Member (Lucas Ferreira): Can I still use the pool until then?\n"
              "Agent (Chloe Martin): Yes, the pool and the classes stay open to you. We'll send a confirmation email.")
    # One closest source sentence per clause, so that no other denial in the source is near by chance.
    one = FaithfulnessConfig(negation_window=1)

    def kinds(output: str, where: str = source) -> list[str]:
        [scored] = faithfulness([where], [output], encoder, one)
        return [f.kind for f in scored.findings]

    # The denial is the answer to the question its clause is closest to.
    assert kinds("Lucas is moving to Leeds and cancels his membership; Chloe says there's no fee for cancelling "
                   "early.") == []
    # "With or without" denies nothing; "no later than" neither.
    assert kinds("Lucas can use the pool with or without a class until the 30th.") == []
    # A denial the source does not make is still one, in whichever clause it sits.
    assert "negation" in kinds("Lucas is moving to Leeds, and Chloe says he can't use the pool until then.")
    # "At no charge" is what "free" says.
    assert kinds("Ollie will patch the tube at no charge.", "Mechanic (Ollie): I'll patch the tube for free.\n"
                 "Customer (Yuki): Great.") == []


@pytest.mark.parametrize(("source", "wrong", "right", "span"), [
    # An antonym WordNet knows and the hand list does not.
    ("Priya: I locked the back door before leaving.\nTom: Thanks.",
     "Priya unlocked the back door before leaving.", "Priya locked the back door before leaving.", "unlocked"),
    # Another thing of the same kind as the one the source names.
    ("Tom: I'd like a coffee and a croissant, please.\nBarista: Coming up.",
     "Tom orders a tea and a croissant.", "Tom orders a coffee and a croissant.", "tea"),
    # An action the source denies, told as done.
    ("Sam: The shop won't exchange the jacket.\nLotta: Too bad.",
     "The shop exchanges Sam's jacket.", "The shop will not exchange Sam's jacket.", "exchanges"),
])
def test_wordnet_finds_swapped_facts_that_are_not_entities(encoder: Any, source: str, wrong: str, right: str,
                                                           span: str) -> None:
    assert span in [text for kind, text in flagged(wrong, source, encoder) if kind in ("swap", "negation")]
    assert flagged(right, source, encoder) == []
    # The same output without the WordNet checks: nothing else in the scorer sees these swaps.
    [plain] = faithfulness([source], [wrong], encoder, FaithfulnessConfig(lexical=False))
    assert span not in [f.text for f in plain.findings]


def test_wordnet_checks_leave_paraphrase_and_converses_alone(encoder: Any) -> None:
    # "lends" against "borrow" tells the same event from the other side; "repair" is a verb here, not a kind.
    source = "Ben: Can I borrow your ladder on Sunday?\nAna: Sure, I'll bring it. The gutter needs a repair."
    assert flagged("Ana will lend Ben the ladder and bring it on Sunday to repair the gutter.", source, encoder) == []
    # An antonym counts only against the source sentences closest to the output sentence.
    source = ("Landlord (Mr. Okafor): The rent goes up to 1,150 from July.\n"
              "Tenant (Julia): Can we sign a two-year lease to keep it lower?\nMr. Okafor: I can do 1,100 then.")
    assert flagged("Mr. Okafor raises Julia's rent to 1,150 from July.", source, encoder) == []


def test_a_synonym_of_a_source_word_is_not_its_opposite(encoder: Any) -> None:
    # "shut" is the opposite of "opened", but one of its senses is "close", which the source says.
    source = "Council: We have opened a shelter at the school, and the bridge will stay closed until Monday."
    assert flagged("The council opened a shelter and keeps the bridge shut until Monday.", source, encoder) == []
    # A synonym does not excuse the opposite itself.
    assert "open" in [t for _, t in flagged("The bridge stays open until Monday.", "Council: The bridge will stay closed "
                                            "until Monday.", encoder)]


def test_an_adjective_is_the_opposite_of_its_antonyms_cluster(encoder: Any) -> None:
    # WordNet's antonym of "young" is "old"; "elderly" is filed as similar to "old" (an indirect antonym).
    source = "Firefighters rescued an elderly couple from a car on Sunday."
    assert ("swap", "young") in flagged("Firefighters rescued a young couple from a car on Sunday.", source, encoder)
    assert ("swap", "elderly") in flagged("Firefighters rescued an elderly couple.", "Firefighters rescued a young "
                                          "couple.", encoder)
    assert flagged("Firefighters pulled an old couple from a car on Sunday.", source, encoder) == []


def test_each_clause_of_a_long_sentence_is_checked_against_its_own_source_sentence(encoder: Any) -> None:
    source = ("Take one capsule three times a day for seven days, with food. Do not drink alcohol during the "
              "course. Call your GP if a rash appears.")
    wrong = "Take one capsule three times a day with food for seven days and avoid coffee during the course."
    assert ("swap", "coffee") in flagged(wrong, source, encoder)
    assert flagged(wrong.replace("coffee", "alcohol"), source, encoder) == []


def test_wordnet_lookups_from_threads_agree_with_one_thread() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from steps import scoring

    words = [w for r in generate_records(30, seed=77) for w in scoring._TOKEN.findall(r["summary"])]
    for cached in (scoring._lemmas, scoring._antonyms, scoring._kinds, scoring._mostly_noun, scoring._synonyms):
        cached.cache_clear()
    with ThreadPoolExecutor(4) as pool:  # the reader shares file objects: interleaved reads would mix up lines
        threaded = list(pool.map(lambda w: (scoring._antonyms(w), scoring._kinds(w)), words))
    for cached in (scoring._lemmas, scoring._antonyms, scoring._kinds, scoring._mostly_noun, scoring._synonyms):
        cached.cache_clear()
    assert threaded == [(scoring._antonyms(w), scoring._kinds(w)) for w in words]


def test_perturbed_sample_summaries_are_caught_and_correct_ones_pass(encoder: Any) -> None:
    """On the generator's records (the development set the rules were shaped on)."""
    rng = random.Random(3)
    rows = []
    for record in generate_records(40, seed=4242):
        rows.append((record["dialogue"], record["summary"], "faithful"))
        for kind, perturb in PERTURBATIONS.items():
            wrong = perturb(rng, record["dialogue"], record["summary"])
            if wrong and wrong != record["summary"]:
                rows.append((record["dialogue"], wrong, kind))
    scores = faithfulness([r[0] for r in rows], [r[1] for r in rows], encoder)
    rate = collections.defaultdict(list)
    for (_, _, kind), scored in zip(rows, scores, strict=True):
        rate[kind].append(scored.flagged)
    share = {kind: sum(v) / len(v) for kind, v in rate.items()}
    assert share["faithful"] <= 0.1, share
    for kind in ("invented_name", "wrong_number", "wrong_day", "wrong_place"):
        assert share[kind] >= 0.9, share


def _labelled(name: str) -> list[dict[str, str]]:
    path = Path(str(resources.files("steps") / "resources" / name))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("name", ["faithfulness_labelled.jsonl", "faithfulness_heldout.jsonl",
                                  "faithfulness_heldout2.jsonl", "faithfulness_heldout3.jsonl"])
def test_shipped_sets_entity_errors_are_caught(encoder: Any, name: str) -> None:
    """The hand-written sets (README: how the scorers were measured); the rates that hold on each."""
    rows = _labelled(name)
    scores = faithfulness([r["input"] for r in rows], [r["output"] for r in rows], encoder)
    by_kind = collections.defaultdict(list)
    for row, scored in zip(rows, scores, strict=True):
        by_kind[row["label"]].append(scored.flagged)
    entity_errors = [f for k in ("invented_name", "wrong_number", "wrong_day", "wrong_place") for f in by_kind[k]]
    assert sum(entity_errors) / len(entity_errors) >= 0.9
    if name != "faithfulness_heldout2.jsonl":  # on the second held-out set 6 correct summaries in 20 are flagged
        assert sum(by_kind["faithful"]) / len(by_kind["faithful"]) <= 0.15


def test_toxicity_flags_insults_not_idioms() -> None:
    scores = toxicity(["You are a worthless idiot and I hate you.", "Flip the kill switch before the deploy.",
                       "Shoot me an email when you are done.", "Thanks, see you Friday. What a f**k up."])
    assert [s.flagged for s in scores] == [True, False, False, True]
    assert scores[0].score < 1 - 0.7 < scores[1].score  # the default threshold is 0.7
    assert {f.kind for f in scores[3].findings} == {"blocked"}


def test_the_embedding_classifier_sees_toxicity_without_swear_words(encoder: Any) -> None:
    # Contempt, a threat and dehumanising words: no word the profanity model was trained on.
    toxic = ["I'll say it slowly, since thinking is clearly not something you do.",
             "Keep complaining and see what happens to you on your way home.",
             "People like you are vermin, and the city would be cleaner without you."]
    benign = ["Flip the kill switch before the deploy.", "This printer is useless, it jammed again.",
              "Mia tells Leo the parcel is late and he asks for a refund."]
    scores = toxicity(toxic + benign, encoder=encoder)
    assert [s.flagged for s in scores] == [True] * 3 + [False] * 3
    assert all("embedding classifier" in s.findings[0].reason for s in scores[:3])
    words_only = toxicity(toxic + benign, ToxicityConfig(classifier=False))
    assert not any(s.flagged for s in words_only)


@pytest.mark.parametrize("name", ["toxicity_labelled.jsonl", "toxicity_heldout.jsonl", "toxicity_heldout2.jsonl",
                                  "toxicity_heldout3.jsonl"])
def test_shipped_toxicity_sets(name: str) -> None:
    rows = _labelled(name)
    scores = toxicity([r["output"] for r in rows])
    toxic = [s.flagged for r, s in zip(rows, scores, strict=True) if r["label"] == "toxic"]
    benign = [s.flagged for r, s in zip(rows, scores, strict=True) if r["label"] == "benign"]
    assert sum(toxic) / len(toxic) >= 0.8
    if name != "toxicity_heldout2.jsonl":  # on the second held-out set 6 benign lines in 25 are flagged
        assert sum(benign) / len(benign) <= 0.1


def test_bad_lines_are_named_by_number() -> None:
    text = '{"input": "a", "output": "b"}\nnot json\n\n[1]\n{"input": "a"}\n{"input": 3, "output": "x", "id": 1}\n'
    with pytest.raises(ScoringInputError) as caught:
        read_records(text, "f.jsonl")
    message = str(caught.value)
    assert "4 bad line(s)" in message
    for expected in ("f.jsonl:2: not JSON", "f.jsonl:4: a JSON object", "f.jsonl:5: 'output' is missing",
                     "f.jsonl:6: 'input' is not a string"):
        assert expected in message
    assert read_records('{"input": "a", "output": "b", "x": 1}\n', "f") == [("a", "b")]
    with pytest.raises(ScoringInputError, match=r"f:2: not UTF-8 \(byte 13\)"):
        read_records(b'{"input": "a", "output": "b"}\n{"input": "a\xff", "output": "b"}\n', "f")
    with pytest.raises(ScoringInputError, match="no records"):
        read_records("\n", "f")
    with pytest.raises(ValueError, match="unknown metric"):
        score_records([("a", "b")], ["judge"])


def _score(*args: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([str(BIN), "score", *args], capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "COLUMNS": "200"})


def test_score_command_writes_one_line_per_record_in_order(tmp_path: Path) -> None:
    records = [{"input": SOURCE, "output": "Patel removed the hold on Tuesday.", "id": 1},
               {"input": SOURCE, "output": "Ines removed the hold on Friday, you idiot.", "id": 2},
               {"input": SOURCE, "output": "Hana accepts the refund of 12 dollars."}]
    source, target = tmp_path / "in.jsonl", tmp_path / "out" / "scores.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = _score(str(source), "--output", str(target), "--metrics", "faithfulness,toxicity")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [set(line) for line in lines] == [{"faithfulness", "toxicity"}] * 3
    assert [line["faithfulness"]["flagged"] for line in lines] == [False, True, False]
    assert [line["toxicity"]["flagged"] for line in lines] == [False, True, False]
    assert all(set(line["toxicity"]) == {"score", "flagged"} for line in lines)
    assert "faithfulness" in result.stdout and "33.3%" in result.stdout


def test_score_command_refuses_bad_input_and_writes_nothing(tmp_path: Path) -> None:
    source, target = tmp_path / "in.jsonl", tmp_path / "scores.jsonl"
    source.write_text('{"input": "a", "output": "b"}\n{"input": "a", "outputs": "b"}\n')
    result = _score(str(source), "--output", str(target), "--metrics", "toxicity")
    assert result.returncode == 2
    assert "in.jsonl:2" in result.stderr and "'output' is missing" in result.stderr
    assert not target.exists() and list(tmp_path.iterdir()) == [source]
    result = _score(str(source), "--output", str(target), "--metrics", "toxicity,rouge")
    assert result.returncode == 2 and "rouge" in result.stderr
    assert not target.exists()


def test_the_monitor_publishes_both_rates_per_variant_from_capture(encoder: Any) -> None:
    from datetime import UTC, datetime

    from monitoring.drift import Captured
    from monitoring.monitor import DriftConfig, Reference, drift_metrics

    records = list(generate_records(30, seed=5))
    at = datetime(2026, 12, 1, tzinfo=UTC)
    captured = [Captured(variant=variant, event_id=f"{variant}-{i}", at=at, inputs=[r["dialogue"]],
                         outputs=[r["summary"] if variant == "v1" else "Bartholomew says: " + r["summary"]])
                for variant in ("v1", "v2") for i, r in enumerate(records)]
    captured.append(Captured(variant="v2", event_id="v2-failed", at=at, inputs=["x"], outputs=None, error=True))
    reference = Reference(inputs=[r["dialogue"] for r in records], outputs=[r["summary"] for r in records])
    datums = drift_metrics("ep", captured, reference, "v1", count_tokens=lambda texts: [len(t.split()) for t in texts],
                           encode=encoder, config=DriftConfig(min_requests=20, quality_sample=25),
                           when=at)
    rates = {(d.name, d.dimensions.get("VariantName")): d for d in datums if "OutputRate" in d.name
             and d.name != "EmptyOutputRate"}
    assert set(rates) == {(n, v) for n in ("UnfaithfulOutputRate", "ToxicOutputRate") for v in ("v1", "v2")}
    assert rates[("UnfaithfulOutputRate", "v2")].value == 100.0 and rates[("UnfaithfulOutputRate", "v1")].value <= 10
    assert rates[("ToxicOutputRate", "v1")].value == 0.0 and rates[("ToxicOutputRate", "v2")].unit == "Percent"
    assert all(d.namespace == "genaiops/Monitoring" for d in rates.values())
