"""Tests of the deterministic description checks, on hand-made cases and on real recorded SmolLM2 replies."""

import json
from pathlib import Path

import pytest

from vlclip_core.config import LLMConfig
from vlclip_core.llm import checks
from vlclip_core.llm.agent import clean_output
from vlclip_core.llm.prompts import load_prompts

FIXTURE = Path(__file__).parent / "fixtures" / "smollm2_replies.json"
LABEL = "prompt_echo: repeats the prompt label"
GOOD = (
    "Orange Maison Lune running shoe in size 12 with a knit upper, a foam midsole that absorbs impact "
    "on long runs and a rubber outsole with deep grooves for grip."
)


def _instructions(step="summarise"):
    return checks.instructions_of(load_prompts(LLMConfig()).messages(step))


def _names(reply, step="summarise"):
    return {checks.check_name(r) for r in checks.run_checks(clean_output(reply), reply, _instructions(step))}


def test_a_good_description_passes_every_check():
    assert checks.run_checks(GOOD, GOOD, _instructions()) == []
    assert checks.run_checks(GOOD, GOOD, _instructions("refine")) == []


@pytest.mark.parametrize(
    "reply, reason",
    [
        ("", "empty_output"),
        ("   ", "empty_output"),
        ('{"pass": true, "missing": []}', "non_text_output: markup or JSON"),
        ("```\nshoe\n```", "non_text_output: markup or JSON"),
        ("12 / 10 -- 44.5 ** 3 %% 9 ## 1 @@ 2 !! 7 ??", "non_text_output: 0/28 characters are letters"),
        ("Catalog data: an orange running shoe in size 12.", f"{LABEL} Catalog data:"),
        ("An orange shoe. Product Type: running shoe.", f"{LABEL} Product type:"),
    ],
)
def test_each_check_names_its_reason(reply, reason):
    assert reason in checks.run_checks(clean_output(reply), reply, _instructions())


def test_instruction_sentences_copied_are_an_echo_but_catalog_data_is_not():
    echo = "A knit running shoe. Use only facts from the catalog data and keep every attribute value."
    assert checks.run_checks(echo, echo, _instructions()) == [
        'prompt_echo: names the prompt\'s block "catalog data"',
        'prompt_echo: repeats the instructions "use only facts from the catalog"',
    ]
    copied = "Foam midsole absorbs impact on long runs. Rubber outsole with deep grooves for grip, size 12."
    assert checks.run_checks(copied, copied, _instructions()) == []


def test_a_block_name_written_out_is_an_echo_but_a_one_word_block_name_is_a_word():
    echo = "The catalog data lists an orange running shoe in size 12 with a knit upper."
    assert checks.run_checks(echo, echo, _instructions()) == [
        'prompt_echo: names the prompt\'s block "catalog data"'
    ]
    plain = "An orange knit running shoe in size 12, a fine candidate for road running after evaluation."
    assert checks.run_checks(plain, plain, _instructions("refine")) == []


def test_instructions_copied_with_their_block_tags_are_an_echo():
    raw = "The catalog data between <catalog_data> and </catalog_data> holds an orange shoe in size 12."
    assert checks.prompt_span(clean_output(raw), raw, _instructions()) == (
        'prompt_echo: repeats the instructions "the catalog data between catalog_data and"'
    )


# Accepted by the agent with the small prompts (SmolLM2, SKU-000021 of the sample catalog, refine step)
# before the field-list, URL and number checks: a record of fields with an invented size and price.
RECORD = (
    "HOT! Kids' Solstice Waterproof Durable Bookbag Business Outdoor Laptop Backpack Waterproof Rucksack "
    "Brown. backpack; 30L, material: Nylon; pattern: Camo; size: 18X24R (6x9); color: brown; "
    "priceRange: $57.99; brand: Solstice; productType: Backpack; category: Product; imageUrl: https://"
)
RECORD_CATALOG = (
    "HOT! Kids' Solstice Waterproof Durable Bookbag Business Outdoor Laptop Backpack Waterproof Rucksack "
    "Brown backpack Camo brown Nylon 30L Solstice"
)


def test_a_record_of_fields_with_a_url_and_invented_numbers_is_not_a_description():
    small = checks.instructions_of(load_prompts(LLMConfig(prompt_version="small")).messages("refine"))
    assert checks.run_checks(RECORD, RECORD, small) == [
        "non_text_output: a URL",
        'field_list: 9 "name: value" fields, not prose',
    ]
    assert checks.unsupported_numbers(RECORD, RECORD_CATALOG) == (
        "unsupported_number: 18, 24, 6, 9, 57.99 not in the catalog data"
    )
    assert checks.unsupported_numbers("A 30L Solstice backpack in brown Nylon.", RECORD_CATALOG) is None
    two = "A backpack with a lid: roll-top. Colour: brown."
    assert checks.field_list(two, two, "") is None


def test_loops_are_caught_three_ways():
    trigram = "soft red wool and soft red wool with soft red wool trim, a warm winter scarf for cold days"
    assert checks.repeated_ngrams(trigram, trigram, "") == 'repetition: "soft red wool" 3 times'
    phrase = "A red wool scarf for cold winter days. It is a red wool scarf for cold winter days."
    assert checks.repeated_ngrams(phrase, phrase, "") == 'repetition: "a red wool scarf for cold" 2 times'
    tandem = "Balloon chair with balloon balloon balloon cushions"
    assert checks.repeated_ngrams(tandem, tandem, "") == 'repetition: "balloon" 3 times back to back'
    raw = "Red scarf.\nWarm wool.\nred scarf"
    assert checks.repeated_lines("", raw, "") == 'repetition: line "red scarf" 2 times'


def test_word_limit_is_the_prompts_own():
    sixty_one = " ".join(f"w{i}" for i in range(61))
    assert checks.over_word_limit(sixty_one, sixty_one, _instructions()) == (
        "over_length: 61 words, the prompt allows 60"
    )
    assert checks.over_word_limit(sixty_one, sixty_one, "Write a description.") is None
    assert checks.word_count("A 2-in-1 shoe , size 12 -") == 5


def _recorded():
    return json.loads(FIXTURE.read_text(encoding="utf-8"))["replies"]


@pytest.mark.parametrize("case", _recorded(), ids=lambda c: c["id"])
def test_recorded_smollm2_replies(case):
    """Real SmolLM2-135M-Instruct replies (v1 prompts) fail exactly the checks a reader sees failing."""
    assert _names(case["reply"], case["step"]) == set(case["fails"])
