"""Enrichment stage: the LLM agent rewrites each item's catalog text, unless the enrichment cache has it."""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, List, Tuple

import numpy as np

from vlclip_core import schema as S
from vlclip_core.batch import Batch, is_null, mark_error, object_column
from vlclip_core.config import VlclipConfig
from vlclip_core.errors import ItemError
from vlclip_core.llm.agent import ChatBackend, EnrichmentAgent, EnrichmentResult, clean_text
from vlclip_core.stages.base import BatchStage

log = logging.getLogger(__name__)

_TEXT_OUTPUTS = (S.ENRICHED_TEXT, S.ENRICHMENT_STATUS, S.ENRICHMENT_REASON, S.ENRICHMENT_SOURCE)


def build_backend(config: VlclipConfig) -> ChatBackend:
    """The LLM backend named by models.llm.backend, built once per actor."""
    llm = config.models.llm
    if llm.backend == "openai":
        from vlclip_core.llm.openai_backend import OpenAIChatBackend

        return OpenAIChatBackend(llm)
    if llm.backend == "null":
        from vlclip_core.models.null import NullChatBackend

        return NullChatBackend(llm)
    from vlclip_core.llm.local_backend import TransformersChatBackend

    return TransformersChatBackend(llm, device=config.models.device)


class EnrichmentStage(BatchStage):
    """Cache hits are copied (0 LLM calls); misses go through the agent in sub-batches of
    stages.enrichment.batch_size."""

    name = "enrichment"
    inputs = (
        S.ITEM_ID,
        S.TITLE,
        S.DESCRIPTION,
        S.PRODUCT_TYPE,
        S.ATTRIBUTES_JSON,
        S.CACHED_TEXT,
        S.CACHED_ENRICHMENT_STATUS,
        S.CACHED_ENRICHMENT_REASON,
    )

    def __init__(self, config: VlclipConfig):
        self.batch_size = config.stages.enrichment.batch_size
        self.agent = EnrichmentAgent(build_backend(config), config.models.llm)

    def new_outputs(self, n: int) -> Batch:
        out = {col: object_column(n) for col in _TEXT_OUTPUTS}
        out[S.LLM_CALLS] = np.zeros(n, dtype=np.int32)
        return out

    def process(self, batch: Batch, idx: np.ndarray, out: Batch) -> None:
        """Fill rows `idx`; bad items are marked as error rows here, so their neighbours stay batched."""
        misses: List[Tuple[int, Dict[str, Any]]] = []
        errors: List[Tuple[int, ItemError]] = []
        for row in idx:
            if not is_null(batch[S.CACHED_TEXT][row]):
                _copy_cached(batch, int(row), out)
                continue
            try:
                misses.append((int(row), item_of(batch, int(row))))
            except ItemError as err:
                errors.append((int(row), err))
        log.debug("enrichment: %d rows, %d cache misses, %d bad items", idx.size, len(misses), len(errors))
        for start in range(0, len(misses), self.batch_size):
            errors += self._enrich(misses[start : start + self.batch_size], out)
        for row, err in errors:
            mark_error(batch, row, self.name, err.error_type, err.message)

    def _enrich(self, chunk: List[Tuple[int, Dict[str, Any]]], out: Batch) -> List[Tuple[int, ItemError]]:
        outcomes = self.agent.enrich([item for _, item in chunk])
        errors = []
        for (row, _), outcome in zip(chunk, outcomes):
            if isinstance(outcome, ItemError):
                errors.append((row, outcome))
            else:
                _write_result(out, row, outcome)
        return errors


def item_of(batch: Batch, row: int) -> Dict[str, Any]:
    """The agent's input for one row; ItemError when it has no text or bad attributes."""
    title, description = _text(batch[S.TITLE][row]), _text(batch[S.DESCRIPTION][row])
    if not clean_text(title) and not clean_text(description):
        raise ItemError("empty_text", "item has neither a title nor a description")
    return {
        "title": title,
        "description": description,
        "product_type": _text(batch[S.PRODUCT_TYPE][row]),
        "attributes": parse_attributes(batch[S.ATTRIBUTES_JSON][row]),
    }


def parse_attributes(raw: Any) -> Dict[str, Any]:
    if is_null(raw) or raw == "":
        return {}
    try:
        attributes = json.loads(raw)
    except (TypeError, ValueError) as err:
        raise ItemError("bad_attributes", f"attributes_json is not valid JSON: {str(raw)[:100]!r}") from err
    if not isinstance(attributes, dict):
        raise ItemError(
            "bad_attributes", f"attributes_json must be a JSON object, got {type(attributes).__name__}"
        )
    return attributes


def _copy_cached(batch: Batch, row: int, out: Batch) -> None:
    out[S.ENRICHED_TEXT][row] = batch[S.CACHED_TEXT][row]
    out[S.ENRICHMENT_STATUS][row] = batch[S.CACHED_ENRICHMENT_STATUS][row]
    out[S.ENRICHMENT_REASON][row] = batch[S.CACHED_ENRICHMENT_REASON][row]
    out[S.ENRICHMENT_SOURCE][row] = S.SOURCE_CACHE
    out[S.LLM_CALLS][row] = 0


def _write_result(out: Batch, row: int, result: EnrichmentResult) -> None:
    out[S.ENRICHED_TEXT][row] = result.text
    out[S.ENRICHMENT_STATUS][row] = result.status
    out[S.ENRICHMENT_REASON][row] = result.reason
    out[S.ENRICHMENT_SOURCE][row] = S.SOURCE_MODEL
    out[S.LLM_CALLS][row] = result.n_calls


def _text(value: Any) -> str:
    return "" if is_null(value) else str(value)
