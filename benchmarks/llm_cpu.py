"""Local LLM speed: prefill and decode tokens/s of TransformersChatBackend on a GGUF or checkpoint, on CPU."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from typing import List, Optional

import torch

from benchmarks.measure import machine_info, spread
from vlclip_core.config import LLMConfig
from vlclip_core.llm.agent import EnrichmentAgent
from vlclip_core.llm.local_backend import TransformersChatBackend

ITEM = {
    "title": "Unisex Cushioned Athletic Shoe Walking Workout Trainer Orange Size 12",
    "description": "This running shoe is made of knit by Maison Lune. Foam midsole absorbs impact.",
    "product_type": "running shoe",
    "attributes": {"brand": "Maison Lune", "color": "orange", "material": "Knit", "size": "12"},
}


def _timed_generate(backend: TransformersChatBackend, prompts: List[str], new_tokens: int) -> float:
    """Seconds to generate exactly `new_tokens` per prompt (no stop, no end of sequence)."""
    backend.config = dataclasses.replace(backend.config, max_new_tokens=new_tokens, stop=[])
    eos = backend.model.generation_config.eos_token_id
    backend.model.generation_config.eos_token_id = None
    try:
        start = time.perf_counter()
        backend.generate(prompts)
        return time.perf_counter() - start
    finally:
        backend.model.generation_config.eos_token_id = eos


def measure(config: LLMConfig, batch: int, new_tokens: int, repeats: int) -> dict:
    load_start = time.perf_counter()
    backend = TransformersChatBackend(config, device="cpu")
    load_s = time.perf_counter() - load_start
    agent = EnrichmentAgent(backend, config)
    fields = agent._prompt_fields(agent._prepare(ITEM))
    prompts = [backend.prompt_text(agent.prompts.messages("summarise", **fields))] * batch
    prompt_tokens = len(backend._bounded_ids(prompts[0]))
    prefill = [_timed_generate(backend, prompts, 1) for _ in range(repeats)]
    full = [_timed_generate(backend, prompts, new_tokens) for _ in range(repeats)]
    decode = [batch * (new_tokens - 1) / (f - p) for f, p in zip(full, prefill)]
    return {
        "load_s": round(load_s, 1),
        "batch": batch,
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "torch_threads": torch.get_num_threads(),
        "prefill_tokens_per_s": spread([batch * prompt_tokens / p for p in prefill]),
        "decode_tokens_per_s": spread(decode),
        "end_to_end_tokens_per_s": spread([batch * new_tokens / f for f in full]),
        "load_average": os.getloadavg(),
        "machine": machine_info(),
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--path", required=True, help="model directory (or hub id)")
    parser.add_argument("--gguf-file")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    config = LLMConfig(path=args.path, gguf_file=args.gguf_file)
    print(json.dumps(measure(config, args.batch, args.new_tokens, args.repeats), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
