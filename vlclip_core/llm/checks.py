"""Deterministic checks of an LLM-written description against its prompt's own words: echo, loops, length."""

from __future__ import annotations

import functools
import re
from collections import Counter
from typing import Callable, List, Optional, Sequence, Tuple

ECHO_SPAN_WORDS = 6  # a run of this many words copied from the prompt's instructions is an echo
LOOP_NGRAM = 3  # a word n-gram of this size occurring LOOP_COUNT times is a loop
LOOP_COUNT = 3
REPEATED_PHRASE_WORDS = 6  # a phrase of this many words occurring twice is a loop
TANDEM_MAX = 4  # an n-gram (n <= TANDEM_MAX) repeated back to back TANDEM_COUNT times is a loop
TANDEM_COUNT = 3
MIN_LETTER_SHARE = 0.6  # share of letters among the non-space characters of a description
FIELD_LIST_MIN = 3  # this many "name: value" fields make a record, not a description

_WORD = re.compile(r"\w+")
_LABEL_LINE = re.compile(r"^([A-Z][A-Za-z]*(?: [A-Za-z]+){0,2}):", re.MULTILINE)
_DATA_BLOCK = re.compile(r"^<([a-z]+(?:_[a-z]+)*)>$", re.MULTILINE)  # <catalog_data> ... </catalog_data>
_DELIMITER = re.compile(r"</?[a-z]+(?:_[a-z]+)*>")  # a block's opening or closing tag inside a line
_WORD_LIMIT = re.compile(r"\bat most (\d+) words\b", re.IGNORECASE)
_MARKUP = ("```", "{\"", "[\"", "<|")
_URL = re.compile(r"\bhttps?://|\bwww\.", re.IGNORECASE)
_FIELD = re.compile(r"(?<![\w:/])[A-Za-z][A-Za-z_]*(?: [A-Za-z_]+){0,2}:(?=\s|$)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def instructions_of(messages: Sequence[dict]) -> str:
    """The text of chat `messages` joined: pass them rendered without catalog data to get the prompt's own
    words (labels, rules, word limit), which a description must not copy."""
    return "\n".join(str(m.get("content", "")) for m in messages)


Check = Callable[[str, str, str], Optional[str]]


def words(text: str) -> List[str]:
    """Casefolded word tokens (punctuation dropped): the unit of every n-gram check."""
    return _WORD.findall(text.casefold())


def word_count(text: str) -> int:
    """Whitespace-separated tokens that hold a letter or digit, as a reader counts words."""
    return sum(1 for token in text.split() if _WORD.search(token))


def empty_output(text: str, raw: str, prompt: str) -> Optional[str]:
    return "empty_output" if not text.strip() else None


def non_text(text: str, raw: str, prompt: str) -> Optional[str]:
    """Markup, JSON or code, or too few letters to be prose."""
    if any(marker in raw for marker in _MARKUP) or text.lstrip().startswith(("{", "[")):
        return "non_text_output: markup or JSON"
    if _URL.search(text):
        return "non_text_output: a URL"
    visible = [c for c in text if not c.isspace()]
    letters = sum(c.isalpha() for c in visible)
    if visible and letters / len(visible) < MIN_LETTER_SHARE:
        return f"non_text_output: {letters}/{len(visible)} characters are letters"
    return None


def field_list(text: str, raw: str, prompt: str) -> Optional[str]:
    """A record of "name: value" fields ("color: brown; price: $57.99; imageUrl: ...") instead of prose."""
    n = len(_FIELD.findall(text))
    return f"field_list: {n} \"name: value\" fields, not prose" if n >= FIELD_LIST_MIN else None


def unsupported_numbers(text: str, source: str) -> Optional[str]:
    """Numbers in `text` that the catalog data (`source`) does not hold: invented prices, sizes, counts."""
    known = set(_NUMBER.findall(source))
    invented = list(dict.fromkeys(n for n in _NUMBER.findall(text) if n not in known))
    return f"unsupported_number: {', '.join(invented[:5])} not in the catalog data" if invented else None


def prompt_labels(text: str, raw: str, prompt: str) -> Optional[str]:
    """The prompt's own field labels ("Catalog data:", "Title:") copied into the reply, or the name of one
    of its data blocks written out ("the catalog data"): a description of a product never names them."""
    found = [label for label in _labels(prompt) if _has_label(text, label)]
    if found:
        return f"prompt_echo: repeats the prompt label {found[0]}:"
    named = [name for name in _block_names(prompt) if _has_phrase(text, name)]
    return f"prompt_echo: names the prompt's block \"{named[0]}\"" if named else None


def prompt_span(text: str, raw: str, prompt: str) -> Optional[str]:
    """A run of ECHO_SPAN_WORDS words taken from the prompt's instructions (not from the catalog data),
    in the cleaned text or the raw reply, with the prompt's block delimiters read as words or dropped."""
    instructions = _instruction_ngrams(prompt)
    for candidate in (text, raw):
        for gram in _ngram_list(words(candidate), ECHO_SPAN_WORDS):
            if gram in instructions:
                return f"prompt_echo: repeats the instructions \"{' '.join(gram)}\""
    return None


def repeated_ngrams(text: str, raw: str, prompt: str) -> Optional[str]:
    """A loop: a short n-gram many times, a longer phrase twice, or an n-gram back to back."""
    tokens = words(text)
    gram, count = _most_common(tokens, LOOP_NGRAM)
    if count >= LOOP_COUNT:
        return f"repetition: \"{' '.join(gram)}\" {count} times"
    gram, count = _most_common(tokens, REPEATED_PHRASE_WORDS)
    if count >= 2:
        return f"repetition: \"{' '.join(gram)}\" {count} times"
    tandem = _tandem_repeat(tokens)
    return f"repetition: \"{' '.join(tandem)}\" {TANDEM_COUNT} times back to back" if tandem else None


def repeated_lines(text: str, raw: str, prompt: str) -> Optional[str]:
    """The same non-empty line twice in the raw reply."""
    counts = Counter(" ".join(words(line)) for line in raw.splitlines())
    counts.pop("", None)
    line, count = counts.most_common(1)[0] if counts else ("", 0)
    return f"repetition: line \"{line[:60]}\" {count} times" if count >= 2 else None


def over_word_limit(text: str, raw: str, prompt: str) -> Optional[str]:
    """More words than the prompt's own "at most N words"."""
    limit = _word_limit(prompt)
    n = word_count(text)
    if limit is not None and n > limit:
        return f"over_length: {n} words, the prompt allows {limit}"
    return None


CHECKS: Tuple[Check, ...] = (
    empty_output,
    non_text,
    prompt_labels,
    prompt_span,
    field_list,
    repeated_ngrams,
    repeated_lines,
    over_word_limit,
)


def run_checks(text: str, raw: str, prompt: str) -> List[str]:
    """The reason of each check that `text` (cleaned) or `raw` (the reply as generated) fails."""
    if empty_output(text, raw, prompt):
        return ["empty_output"]
    return [reason for check in CHECKS[1:] for reason in (check(text, raw, prompt),) if reason]


def check_name(reason: str) -> str:
    """The check a reason comes from: "prompt_echo: ..." -> "prompt_echo"."""
    return reason.split(":", 1)[0].strip()


# What the checks read from a prompt is the same for every item of a step (the prompt passed is its
# instructions, rendered without catalog data), so it is derived once per distinct prompt.


@functools.lru_cache(maxsize=64)
def _instruction_ngrams(prompt: str) -> frozenset:
    """The prompt's ECHO_SPAN_WORDS-grams, with its block delimiters read as words and dropped."""
    plain = words(_DELIMITER.sub(" ", prompt))
    return frozenset(_ngrams(words(prompt), ECHO_SPAN_WORDS) | _ngrams(plain, ECHO_SPAN_WORDS))


@functools.lru_cache(maxsize=64)
def _word_limit(prompt: str) -> Optional[int]:
    limits = [int(n) for n in _WORD_LIMIT.findall(prompt)]
    return min(limits) if limits else None


@functools.lru_cache(maxsize=64)
def _labels(prompt: str) -> Tuple[str, ...]:
    """Field labels ("Title:") and the names of the data blocks ("<catalog_data>" -> "Catalog data")."""
    blocks = [name.replace("_", " ").capitalize() for name in _DATA_BLOCK.findall(prompt)]
    return tuple(dict.fromkeys(blocks + _LABEL_LINE.findall(prompt)))


@functools.lru_cache(maxsize=64)
def _block_names(prompt: str) -> Tuple[str, ...]:
    """Data block names of two or more words ("<catalog_data>" -> "catalog data"); one-word names such
    as "candidate" are ordinary words and count only as labels."""
    return tuple(dict.fromkeys(n.replace("_", " ") for n in _DATA_BLOCK.findall(prompt) if "_" in n))


def _has_label(text: str, label: str) -> bool:
    return _has_phrase(text, label, r"\s*:")


def _has_phrase(text: str, phrase: str, after: str = r"(?!\w)") -> bool:
    return _phrase_pattern(phrase, after).search(text) is not None


@functools.lru_cache(maxsize=256)
def _phrase_pattern(phrase: str, after: str) -> "re.Pattern[str]":
    return re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, phrase.split())) + after, re.IGNORECASE)


def _ngram_list(tokens: List[str], n: int) -> List[Tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def _ngrams(tokens: List[str], n: int) -> set:
    return set(_ngram_list(tokens, n))


def _most_common(tokens: List[str], n: int) -> Tuple[Tuple[str, ...], int]:
    counts = Counter(_ngram_list(tokens, n))
    return counts.most_common(1)[0] if counts else ((), 0)


def _tandem_repeat(tokens: List[str]) -> Optional[Tuple[str, ...]]:
    """The first n-gram (n <= TANDEM_MAX) that repeats TANDEM_COUNT times in a row."""
    for n in range(1, TANDEM_MAX + 1):
        span = n * TANDEM_COUNT
        for start in range(len(tokens) - span + 1):
            unit = tokens[start:start + n]
            if all(tokens[start + k * n:start + (k + 1) * n] == unit for k in range(1, TANDEM_COUNT)):
                return tuple(unit)
    return None
