"""The three-step VL-CLIP text agent: summarise -> evaluate -> refine, output checks, catalog fallback."""

from __future__ import annotations

import html
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

from vlclip_core.config import LLMConfig
from vlclip_core.errors import ItemError
from vlclip_core.llm.checks import instructions_of, run_checks, unsupported_numbers
from vlclip_core.llm.prompts import PromptSet, load_prompts
from vlclip_core.llm.verdict import Verdict, parse_reply

log = logging.getLogger(__name__)

STATUS_OK = "ok"
STATUS_REFINED = "refined"
STATUS_FALLBACK = "fallback"
EVALUATION_UNPARSABLE = "evaluation_unparsable"

_TAG = re.compile(r"</?[A-Za-z!][^<>]{0,300}>")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_KEYWORD_SEP = re.compile(r"\s*[|;,]\s*")
_REPEATED_WORD = re.compile(r"\b(\w+)(?:\s+\1\b)+", re.IGNORECASE)
_ASCII_CONTROL = {code: " " for code in (*range(32), 127)}
_LABEL = re.compile(
    r"^(?:here is [^:\n]{0,80}:|(?:rewritten |refined |product )?description:)\s*", re.IGNORECASE
)


class ChatBackend(Protocol):
    def chat(self, conversations: Sequence[Sequence[dict]]) -> List[Union[str, Exception]]:
        """One reply per conversation: its text, or the exception that ended it."""


@dataclass(frozen=True)
class EnrichmentResult:
    text: str
    status: str  # ok | refined | fallback
    reason: Optional[str]
    n_calls: int
    checks: Tuple[str, ...] = ()  # every check failure of every candidate text, in order


@dataclass
class _Work:
    """One item on its way through the agent."""

    fields: Dict[str, str]  # cleaned title, description, product_type
    attributes: Dict[str, str]
    text: str = ""
    raw: str = ""  # the reply `text` was cleaned from
    instructions: str = ""  # the words of the prompt that produced `text`, without catalog data
    refined: bool = False
    n_calls: int = 0
    first_failure: Optional[str] = None
    feedback: Dict[str, List[str]] = field(default_factory=lambda: {"missing": [], "reasons": []})
    check_failures: List[str] = field(default_factory=list)
    result: Union[EnrichmentResult, ItemError, None] = None


Outcome = Union[EnrichmentResult, ItemError]


class EnrichmentAgent:
    """Rewrites catalog text with an LLM, batch by batch: every item goes through each step together.

    `enrich(items)` takes dicts with title, description, product_type and attributes (a dict) and
    returns one outcome per item: an EnrichmentResult, or (only when `on_error == "error"`) the
    ItemError("llm_error", ...) that the stage turns into an error row.
    """

    def __init__(self, backend: ChatBackend, config: LLMConfig, prompts: Optional[PromptSet] = None):
        self.backend = backend
        self.config = config
        self.prompts = prompts or load_prompts(config)

    def enrich(self, items: Sequence[Mapping[str, Any]]) -> List[Outcome]:
        work = [self._prepare(item) for item in items]
        for w, reply in self._ask(work, "summarise"):
            self._accept(w, "summarise", reply)
        for _ in range(self.config.max_rounds):
            self._evaluate(_pending(work))
            for w, reply in self._ask(_pending(work), "refine"):
                self._accept(w, "refine", reply)
                w.refined = True
        for w in _pending(work):
            self._finish(w)
        return [w.result for w in work]

    def _prepare(self, item: Mapping[str, Any]) -> _Work:
        limit = self.config.max_input_chars
        attributes = clean_attributes(item.get("attributes"))
        title = truncate_words(clean_text(item.get("title")), max(limit // 4, 1))
        budget = max(limit - len(title) - len(format_attributes(attributes)), 0)
        fields = {
            "title": title,
            "product_type": truncate_words(clean_text(item.get("product_type")), 200),
            "description": truncate_words(clean_text(item.get("description")), budget),
        }
        return _Work(fields=fields, attributes=attributes)

    def _ask(self, work: List[_Work], step: str) -> List[tuple]:
        """Send one `step` conversation per item; items whose call failed get their final outcome."""
        if not work:
            return []
        replies = self.backend.chat([self.prompts.messages(step, **self._prompt_fields(w)) for w in work])
        answered = []
        for w, reply in zip(work, replies):
            w.n_calls += 1
            if isinstance(reply, BaseException):
                self._fail(w, step, reply)
            else:
                answered.append((w, reply))
        return answered

    def _accept(self, w: _Work, step: str, reply: str) -> None:
        """Take `reply` as the item's candidate text, with what its checks need to know of the prompt."""
        w.instructions = instructions_of(self.prompts.messages(step))
        w.raw, w.text = reply, clean_output(reply)

    def _prompt_fields(self, w: _Work) -> Dict[str, str]:
        return {
            **w.fields,
            "attributes": format_attributes(w.attributes) or "none",
            "summary": w.text,
            "missing": "; ".join(w.feedback["missing"]) or "none",
            "reasons": "; ".join(w.feedback["reasons"]) or "none",
        }

    def _evaluate(self, work: List[_Work]) -> None:
        for w, reply in self._ask(work, "evaluate"):
            verdict = parse_evaluation(reply, self.config.verdict_format)
            problems = self._check(w)
            if verdict.passed and not problems:
                w.result = self._success(w)
                continue
            label = [] if verdict.parsed else [EVALUATION_UNPARSABLE]
            if w.first_failure is None:
                w.first_failure = "; ".join(label + problems) or _evaluation_failure(verdict)
            w.feedback = {
                "missing": verdict.missing + _missing_values(w.attributes, w.text),
                "reasons": label + verdict.reasons + problems,
            }

    def _finish(self, w: _Work) -> None:
        problems = self._check(w)
        if problems:
            w.result = self._fallback(w, "; ".join(problems))
        else:
            w.result = self._success(w)

    def _check(self, w: _Work) -> List[str]:
        """Every deterministic check the candidate fails; a verdict cannot overrule them."""
        problems = run_checks(w.text, w.raw, w.instructions)
        if problems != ["empty_output"]:
            problems += check_text(w.text, w.attributes, self.config.min_chars, self.config.max_chars)
            invented = unsupported_numbers(w.text, " ".join([*w.fields.values(), *w.attributes.values()]))
            problems += [invented] if invented else []
        w.check_failures += problems
        return problems

    def _success(self, w: _Work) -> EnrichmentResult:
        return EnrichmentResult(
            w.text, _success_status(w), w.first_failure, w.n_calls, tuple(w.check_failures)
        )

    def _fail(self, w: _Work, step: str, err: BaseException) -> None:
        kind = getattr(err, "kind", type(err).__name__)
        log.warning("LLM %s step failed: %s", step, kind)
        if self.config.on_error == "error":
            w.result = ItemError("llm_error", f"{step} step: {kind}: {str(err)[:300]}")
        else:
            w.result = self._fallback(w, f"llm_error: {kind}")

    def _fallback(self, w: _Work, reason: str) -> EnrichmentResult:
        text = fallback_text(w.fields, w.attributes, self.config.max_chars)
        return EnrichmentResult(text, STATUS_FALLBACK, reason, w.n_calls, tuple(w.check_failures))


def _pending(work: List[_Work]) -> List[_Work]:
    return [w for w in work if w.result is None]


def _evaluation_failure(verdict: Verdict) -> str:
    details = "; ".join(verdict.missing + verdict.reasons)
    return f"evaluation_failed: {details}"[:300] if details else "evaluation_failed"


def _success_status(w: _Work) -> str:
    return STATUS_REFINED if w.refined else STATUS_OK


# --- evaluation parsing ----------------------------------------------------------------------


def parse_evaluation(reply: str, verdict_format: str = "json") -> Verdict:
    """The verdict of an evaluate reply: the whole reply, strict JSON or one word (llm/verdict.py)."""
    return parse_reply(reply, verdict_format)


# --- text cleaning, checks and the fallback ---------------------------------------------------


def clean_text(text: Any) -> str:
    """HTML tags and entities, control characters and runs of whitespace removed."""
    if text is None:
        return ""
    text = html.unescape(_TAG.sub(" ", str(text)))
    text = _TAG.sub(" ", text)
    if text.isascii():  # the common case: category C of ASCII is exactly 0-31 and 127
        text = text.translate(_ASCII_CONTROL)
    else:
        text = "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)
    return " ".join(text.split())


def clean_output(reply: str) -> str:
    """An LLM reply as a plain description: cleaned, without wrapping quotes or a leading label."""
    text = clean_text(reply)
    text = _LABEL.sub("", text).strip()
    return text.strip("\"'`").strip()


def truncate_words(text: str, max_chars: int) -> str:
    """`text` cut to at most `max_chars`, on a word boundary when one is near."""
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars + 1]
    space = cut.rfind(" ")
    cut = cut[:space] if space > max_chars // 2 else text[:max_chars]
    return cut.rstrip(" ,;:-")


def clean_attributes(attributes: Optional[Mapping[str, Any]]) -> Dict[str, str]:
    """Catalog attributes with cleaned keys and values, empty values dropped, sorted by key."""
    cleaned = {}
    for key, value in sorted((attributes or {}).items(), key=lambda kv: str(kv[0])):
        key_text, value_text = clean_text(key), clean_text(value)
        if key_text and value_text:
            cleaned[key_text] = value_text
    return cleaned


def format_attributes(attributes: Mapping[str, str]) -> str:
    return "; ".join(f"{key}: {value}" for key, value in attributes.items())


def check_text(text: str, attributes: Mapping[str, str], min_chars: int, max_chars: int) -> List[str]:
    """Problems of a final description: empty, too short/long, catalog attribute values missing."""
    if not text:
        return ["empty_output"]
    problems = []
    if len(text) < min_chars:
        problems.append("too_short")
    if len(text) > max_chars:
        problems.append("too_long")
    missing = _missing_values(attributes, text)
    if missing:
        problems.append("missing_attributes: " + ", ".join(missing))
    return problems


def _missing_values(attributes: Mapping[str, str], text: str) -> List[str]:
    haystack = " ".join(text.casefold().split())
    return [f"{key}={value}" for key, value in attributes.items() if not _contains_phrase(haystack, value)]


def _contains_phrase(haystack: str, value: str) -> bool:
    """`value` occurs in `haystack` (casefolded) and is not part of a longer word ("M" is not in "mesh")."""
    pattern = r"(?<!\w)" + re.escape(value.casefold()) + r"(?!\w)"
    return re.search(pattern, haystack) is not None


def dedupe_keywords(title: str) -> str:
    """A keyword-stuffed title without repeated segments ("a | b | a") or repeated words ("red red")."""
    seen, segments = set(), []
    for segment in _KEYWORD_SEP.split(title):
        segment = _REPEATED_WORD.sub(r"\1", segment).strip()
        if segment and segment.casefold() not in seen:
            seen.add(segment.casefold())
            segments.append(segment)
    return ", ".join(segments)


def first_sentences(text: str, n: int = 2) -> str:
    return " ".join(_SENTENCE_END.split(text)[:n]) if text else ""


def fallback_text(fields: Mapping[str, str], attributes: Mapping[str, str], max_chars: int) -> str:
    """The catalog text, cleaned: title, product type, attribute pairs, the description's first sentences."""
    title = truncate_words(dedupe_keywords(fields.get("title", "")), max(max_chars // 3, 1))
    product_type = fields.get("product_type", "")
    parts = [title]
    if product_type and product_type.casefold() not in title.casefold():
        parts.append(product_type)
    parts += [format_attributes(attributes), first_sentences(fields.get("description", ""))]
    text = ". ".join(p.rstrip(" .") for p in parts if p.strip(" ."))
    return truncate_words(text + "." if text else "", max_chars)
