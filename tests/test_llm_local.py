"""Tests of the tiny offline LLM and the transformers backend that loads it like a real checkpoint."""

import time

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from vlclip_core.config import LLMConfig
from transformers import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

from vlclip_core.llm.agent import EnrichmentAgent
from vlclip_core.llm.generation import ReplyOnly, StopAtStrings, cut_at_stop
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


def test_repetition_penalty_spares_the_prompts_tokens():
    ids = torch.tensor([[7, 8, 9, 5, 6]])  # prompt 7 8 9, reply 5 6
    scores = torch.full((1, 12), 2.0)
    out = ReplyOnly(RepetitionPenaltyLogitsProcessor(2.0), prompt_len=3)(ids, scores.clone())
    assert out[0, [5, 6]].tolist() == [1.0, 1.0]  # the reply's tokens are penalised
    assert out[0, [7, 8, 9, 10]].tolist() == [2.0] * 4  # catalog data in the prompt may be copied


def test_no_repeat_ngram_bans_the_replys_own_ngrams_only():
    ids = torch.tensor([[7, 8, 5, 6, 1, 5, 7]])  # prompt 7 8; reply 5 6 1 5 7
    out = ReplyOnly(NoRepeatNGramLogitsProcessor(2), prompt_len=2)(ids, torch.zeros(1, 10))
    assert torch.isinf(out[0]).nonzero().flatten().tolist() == []  # "7 8" is the prompt's: allowed
    ids = torch.tensor([[7, 8, 5, 6, 1, 5]])
    out = ReplyOnly(NoRepeatNGramLogitsProcessor(2), prompt_len=2)(ids, torch.zeros(1, 10))
    assert torch.isinf(out[0]).nonzero().flatten().tolist() == [6]  # "5 6" again: banned


def test_stop_strings_end_a_reply_after_its_first_words(backend):
    prompt_len = 2
    ids = torch.tensor([backend.tokenizer("x x", add_special_tokens=False)["input_ids"][:prompt_len] * 1])
    stop = StopAtStrings(backend.tokenizer, ["dress"], prompt_len=ids.shape[1])
    reply = backend.tokenizer("\n\nred dress", add_special_tokens=False)["input_ids"]
    assert stop(torch.cat([ids, torch.tensor([reply[:1]])], dim=1), None).tolist() == [False]
    assert stop(torch.cat([ids, torch.tensor([reply])], dim=1), None).tolist() == [True]
    assert cut_at_stop("\n\nred dress\n\nCatalog data:", ["\n\n"]) == "red dress"
    assert cut_at_stop("red dress", ["\n\n", "Title:"]) == "red dress"
