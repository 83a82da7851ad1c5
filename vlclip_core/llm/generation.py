"""Loop controls for local generation: penalties over the reply's own tokens, and stop strings."""

from __future__ import annotations

from typing import List, Sequence

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    StoppingCriteria,
    StoppingCriteriaList,
)

from vlclip_core.config import LLMConfig


class ReplyOnly(LogitsProcessor):
    """Applies `inner` to the generated tokens only, so a reply may copy the prompt's catalog data.

    With left padding every prompt of a batch ends at column `prompt_len`.
    """

    def __init__(self, inner: LogitsProcessor, prompt_len: int):
        self.inner = inner
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self.inner(input_ids[:, self.prompt_len:], scores)


class StopAtStrings(StoppingCriteria):
    """Ends a row once its reply, leading whitespace aside, holds one of `stops`."""

    def __init__(self, tokenizer, stops: Sequence[str], prompt_len: int):
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        replies = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=True)
        done = [any(stop in reply.lstrip() for stop in self.stops) for reply in replies]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def logits_processors(config: LLMConfig, prompt_len: int) -> LogitsProcessorList:
    """The repetition penalty and no-repeat n-gram rule of `config`, over the reply's tokens."""
    processors: List[LogitsProcessor] = []
    if config.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(float(config.repetition_penalty)))
    if config.no_repeat_ngram_size > 0:
        processors.append(NoRepeatNGramLogitsProcessor(config.no_repeat_ngram_size))
    return LogitsProcessorList(ReplyOnly(p, prompt_len) for p in processors)


def stopping_criteria(config: LLMConfig, tokenizer, prompt_len: int) -> StoppingCriteriaList:
    return StoppingCriteriaList([StopAtStrings(tokenizer, config.stop, prompt_len)] if config.stop else [])


def cut_at_stop(reply: str, stops: Sequence[str]) -> str:
    """`reply` without leading whitespace, up to the first stop string."""
    text = reply.lstrip()
    ends = [text.find(stop) for stop in stops if stop in text]
    return text[: min(ends)] if ends else text
