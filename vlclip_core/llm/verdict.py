"""The evaluate step's verdict: the model's whole reply, one JSON object of a strict schema or one word.

The reply can echo product text, and product text is untrusted: a description holding {"pass": true}
must not become the verdict. So nothing is searched for inside the reply: it is the verdict as a whole
(optionally inside one ```json fence) or it is unparsable. The reply's size and bracket depth are checked
before it is decoded, so a huge or deeply nested reply costs nothing and never raises. A model too small
to write the JSON (models.llm.verdict_format=yes_no) answers one word; the whole reply is that word.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, List, Optional

MAX_REPLY_CHARS = 8_000  # a verdict is a few hundred characters; anything far longer is not one
MAX_DEPTH = 2  # the object, and the lists inside it
MAX_ITEMS = 20  # entries of "missing" or "reasons"
MAX_ITEM_CHARS = 200
KEYS = frozenset({"pass", "missing", "reasons"})
VERDICT_FORMATS = ("json", "yes_no")
_YES_NO = re.compile(r"\A\s*(yes|no)\s*[.!]?\s*\Z", re.IGNORECASE)
_FENCE = re.compile(r"\A```(?:json)?[ \t]*\n?(.*?)\n?```\Z", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    missing: List[str]
    reasons: List[str]
    parsed: bool = True


UNPARSABLE = Verdict(passed=False, missing=[], reasons=[], parsed=False)


def parse_verdict(reply: Optional[str]) -> Verdict:
    """The verdict in `reply`, or UNPARSABLE (never raises).

    Accepted: exactly {"pass": true|false, "missing": [str, ...], "reasons": [str, ...]}, "missing" and
    "reasons" optional, no other key, nothing before or after the object but white space (or one code
    fence around it), at most MAX_REPLY_CHARS characters. Strings are cleaned (control characters and
    runs of white space) and cut to MAX_ITEM_CHARS; more than MAX_ITEMS entries is unparsable.
    """
    obj = _decode_whole(reply)
    if obj is None or set(obj) - KEYS or not isinstance(obj.get("pass"), bool):
        return UNPARSABLE
    missing, reasons = _strings(obj.get("missing", [])), _strings(obj.get("reasons", []))
    if missing is None or reasons is None:
        return UNPARSABLE
    return Verdict(passed=obj["pass"], missing=missing, reasons=reasons)


def parse_yes_no(reply: Optional[str]) -> Verdict:
    """The verdict of a one-word answer: the whole reply is "yes" or "no" (any case, one "." or "!" after
    it), else UNPARSABLE. "Yes, but ..." or a reply that starts by copying product text is no answer."""
    match = _YES_NO.match(reply) if isinstance(reply, str) and len(reply) <= 16 else None
    if match is None:
        return UNPARSABLE
    passed = match.group(1).casefold() == "yes"
    return Verdict(passed=passed, missing=[], reasons=[] if passed else ["the evaluation answered no"])


def parse_reply(reply: Optional[str], verdict_format: str = "json") -> Verdict:
    """The verdict of an evaluate reply in `verdict_format` (one of VERDICT_FORMATS)."""
    return parse_yes_no(reply) if verdict_format == "yes_no" else parse_verdict(reply)


def _decode_whole(reply: Optional[str]) -> Optional[dict]:
    if not isinstance(reply, str) or len(reply) > MAX_REPLY_CHARS:
        return None
    text = reply.strip()
    fenced = _FENCE.match(text)
    text = fenced.group(1).strip() if fenced else text
    if not text.startswith("{") or nesting_depth(text) > MAX_DEPTH:
        return None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def nesting_depth(text: str) -> int:
    """Deepest bracket nesting of JSON `text`, brackets inside strings not counted (a linear scan)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _strings(value: Any) -> Optional[List[str]]:
    """A list of cleaned, non-empty strings, or None when `value` is not a list of strings."""
    if not isinstance(value, list) or len(value) > MAX_ITEMS or not all(isinstance(v, str) for v in value):
        return None
    cleaned = (_clean(v)[:MAX_ITEM_CHARS] for v in value)
    return [v for v in cleaned if v]


def _clean(text: str) -> str:
    text = "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)
    return " ".join(text.split())
