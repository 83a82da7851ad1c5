"""Tests of the tiny offline LLM and the transformers backend that loads it like a real checkpoint."""

import time

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from vlclip_core.config import LLMConfig
from vlclip_core.llm.agent import EnrichmentAgent
from vlclip_core.llm.local_backend import TransformersChatBackend
from vlclip_core.llm.tiny import build_tiny_llm

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_llm(str(tmp_path_factory.mktemp("tiny")), seed=0)


@pytest.fixture(scope="module")
def backend(tiny_dir):
    config = LLMConfig(path=tiny_dir, max_new_tokens=48, max_input_tokens=256)
    return TransformersChatBackend(config, device="cpu")


def _conv(text):
    return [
        {"role": "system", "content": "You write product descriptions."},
        {"role": "user", "content": text},
    ]


def test_tiny_llm_loads_with_auto_classes(tiny_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert model.config.model_type == "llama"
    assert (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token) == ("<pad>", "<s>", "</s>")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "red dress"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<s>user\nred dress</s>\n<s>assistant\n"
    assert tokenizer.decode(tokenizer("red cotton dress, size M")["input_ids"]) == "red cotton dress, size M"


def test_build_is_deterministic_for_a_seed(tiny_dir, tmp_path):
    again = load_file(f"{build_tiny_llm(str(tmp_path / 'a'), seed=0)}/model.safetensors")
    other = load_file(f"{build_tiny_llm(str(tmp_path / 'b'), seed=1)}/model.safetensors")
    first = load_file(f"{tiny_dir}/model.safetensors")
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_greedy_batched_generation_is_deterministic_and_fast(backend):
    conversations = [_conv(f"red cotton dress size {i} " * (i + 1)) for i in range(8)]
    start = time.perf_counter()
    first = backend.chat(conversations)
    elapsed = time.perf_counter() - start
    second = backend.chat(conversations)
    assert all(isinstance(text, str) for text in first)
    assert first == second
    assert elapsed < 10.0


def test_left_padding_does_not_change_a_reply(backend):
    short = _conv("blue shoe")
    alone = backend.chat([short])[0]
    batched = backend.chat([_conv("long leather jacket with zip pockets " * 6), short])[1]
    assert batched == alone


def test_over_long_input_is_cut_not_crashing(backend):
    [reply] = backend.chat([_conv("waterproof hiking boot " * 3000)])
    assert isinstance(reply, str)
    ids = backend._bounded_ids(backend.prompt_text(_conv("waterproof hiking boot " * 3000)))
    assert len(ids) == backend.max_input_tokens == 256
    assert backend.tokenizer.decode(ids[:12]).startswith("<s>system\nYou")
    assert backend.tokenizer.decode(ids[-10:]).endswith("</s>\n<s>assistant\n")


def test_agent_runs_end_to_end_on_the_tiny_llm(tiny_dir, backend):
    config = LLMConfig(path=tiny_dir, max_new_tokens=48)
    item = {
        "title": "Red cotton dress",
        "description": "Soft summer dress.",
        "product_type": "dress",
        "attributes": {"colour": "red", "size": "M"},
    }
    [result] = EnrichmentAgent(backend, config).enrich([item])
    # random weights never write a valid description: evaluation unparsable, refinement fails the checks
    assert (result.status, result.n_calls) == ("fallback", 3)
    assert result.text == "Red cotton dress. colour: red; size: M. Soft summer dress."
