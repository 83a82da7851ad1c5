"""LLM backend on a local transformers causal LM (hub id, directory or GGUF file), greedy and batched."""

from __future__ import annotations

import logging
from typing import List, Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from vlclip_core.config import ConfigError, LLMConfig
from vlclip_core.llm.generation import cut_at_stop, logits_processors, stopping_criteria
from vlclip_core.models.device import torch_dtype

log = logging.getLogger(__name__)

Conversation = Sequence[dict]


def resolve_device(device: str) -> str:
    """`auto` -> cuda when available, else cpu."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class TransformersChatBackend:
    """Generates chat replies with a causal LM: chat template, left padding, greedy decoding with the
    loop controls of the config (repetition penalty and no-repeat n-grams over the reply, stop strings).

    `chat(conversations)` returns one reply per conversation (text or the exception that ended it).
    Prompts longer than `max_input_tokens` (or the model's context minus `max_new_tokens`) are cut
    in the middle, so the instructions at the start and the generation prompt at the end survive.
    """

    def __init__(self, config: LLMConfig, device: str = "auto"):
        self.config = config
        self.device = resolve_device(device)
        dtype = torch_dtype(config.dtype, torch.device(self.device))
        kwargs = {"gguf_file": config.gguf_file} if config.gguf_file else {}
        log.info(
            "loading LLM %s (gguf_file=%s) on %s (%s)", config.path, config.gguf_file, self.device, dtype
        )
        self.tokenizer = AutoTokenizer.from_pretrained(config.path, **kwargs)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(config.path, dtype=dtype, **kwargs).to(self.device)
        self.model.eval()
        self.max_input_tokens = self._input_token_bound()

    def chat(self, conversations: Sequence[Conversation]) -> List:
        if not conversations:
            return []
        try:
            return self.generate([self.prompt_text(c) for c in conversations])
        except Exception as err:  # noqa: BLE001 - isolate the failing conversation below
            if len(conversations) == 1:
                return [err]
            log.warning(
                "LLM batch of %d failed (%s: %s); generating one by one",
                len(conversations),
                type(err).__name__,
                err,
            )
        return [reply for c in conversations for reply in self.chat([c])]

    def prompt_text(self, messages: Conversation) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True
            )
        turns = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n\n".join(turns + ["assistant:"])

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str]) -> List[str]:
        """Greedy continuation of each prompt, decoded without special tokens, cut at a stop string."""
        encoded = [self._bounded_ids(p) for p in prompts]
        batch = self.tokenizer.pad({"input_ids": encoded}, padding=True, return_tensors="pt").to(self.device)
        prompt_len = batch["input_ids"].shape[1]
        output = self.model.generate(
            **batch,
            max_new_tokens=self.config.max_new_tokens,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
            logits_processor=logits_processors(self.config, prompt_len),
            stopping_criteria=stopping_criteria(self.config, self.tokenizer, prompt_len),
        )
        replies = self.tokenizer.batch_decode(output[:, prompt_len:], skip_special_tokens=True)
        return [cut_at_stop(text, self.config.stop).strip() for text in replies]

    def _bounded_ids(self, prompt: str) -> List[int]:
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_input_tokens:
            return ids
        head = self.max_input_tokens // 2
        tail = self.max_input_tokens - head
        log.info("LLM prompt of %d tokens cut to %d", len(ids), self.max_input_tokens)
        return ids[:head] + ids[-tail:]

    def _input_token_bound(self) -> int:
        cfg = self.model.config
        context = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        bound = self.config.max_input_tokens
        if context:
            bound = min(bound, int(context) - self.config.max_new_tokens)
        if bound <= 0:
            raise ConfigError(
                f"models.llm.max_new_tokens={self.config.max_new_tokens} leaves no room in the "
                f"model context of {context} tokens"
            )
        return bound
