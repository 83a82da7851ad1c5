"""Benchmark model sizes: `tiny` (the test models) and `bench` (big enough to dominate decoding on CPU)."""

from __future__ import annotations

import json
import logging
import os
from typing import Dict

from vlclip_core.models.tiny import seeded

log = logging.getLogger(__name__)

BENCH_CLIP_NAME = "vlclip-bench"
BENCH_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 128, "layers": 4, "width": 192, "head_width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 4},
}
BENCH_DETECTOR_SIZE = {"shortest_edge": 224, "longest_edge": 320}
BENCH_LLM = dict(
    hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)
MODEL_SIZES = ("tiny", "bench")


def build_models(out_dir: str, size: str = "bench", seed: int = 0) -> Dict[str, str]:
    """Build (once per seed) the models of `size`; returns the paths that `tiny_overrides` takes."""
    from vlclip_core.models.tiny import build_tiny_models

    if size not in MODEL_SIZES:
        raise ValueError(f"model size must be one of {MODEL_SIZES}, got {size!r}")
    if size == "tiny":
        return build_tiny_models(out_dir, seed=seed)
    ready = os.path.join(out_dir, "READY")
    if os.path.exists(ready):
        with open(ready, encoding="utf-8") as fh:
            stamp = json.load(fh)
        if stamp.get("seed") == seed:
            return stamp["paths"]
    clip = build_clip(out_dir, size, seed)
    paths = {
        "clip_model_name": clip["model_name"],
        "clip_config_dir": clip["config_dir"],
        "clip_checkpoint": clip["checkpoint"],
        "detector": _build_detector(out_dir, seed),
        "llm": _build_llm(out_dir, seed),
    }
    with open(ready, "w", encoding="utf-8") as fh:
        json.dump({"seed": seed, "paths": paths}, fh, indent=2, sort_keys=True)
    log.info("built %s models (seed %d) in %s", size, seed, out_dir)
    return paths


def build_clip(out_dir: str, size: str = "bench", seed: int = 0) -> Dict[str, str]:
    """A CLIP checkpoint of `size` with seed `seed` (another seed = another checkpoint, same architecture)."""
    from vlclip_core.models.tiny import build_tiny_clip, save_seeded_clip

    if size == "tiny":
        return build_tiny_clip(out_dir, seed)
    return save_seeded_clip(out_dir, BENCH_CLIP_NAME, BENCH_CLIP_CONFIG, seed)


def _build_detector(out_dir: str, seed: int) -> str:
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    from vlclip_core.models.tiny import tiny_bert_vocab

    det_dir = os.path.join(out_dir, "detector")
    tokenizer = BertTokenizerFast(vocab=tiny_bert_vocab())
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size=BENCH_DETECTOR_SIZE), tokenizer=tokenizer
    )
    processor.save_pretrained(det_dir)
    backbone = SwinConfig(
        image_size=224,
        patch_size=4,
        embed_dim=32,
        depths=[1, 1, 2, 1],
        num_heads=[1, 2, 2, 4],
        window_size=7,
        out_features=["stage2", "stage3", "stage4"],
    )
    text = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=64,
        num_queries=50,
        encoder_layers=2,
        decoder_layers=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=128,
    )
    with seeded(seed):
        model = GroundingDinoForObjectDetection(config).eval()
    model.save_pretrained(det_dir)
    return det_dir


def _build_llm(out_dir: str, seed: int) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    from vlclip_core.llm.tiny import build_tiny_tokenizer

    path = os.path.join(out_dir, "llm")
    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **BENCH_LLM,
    )
    with seeded(seed):
        model = LlamaForCausalLM(config).eval()
    model.generation_config.do_sample = False
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tokenizer.save_pretrained(path)
    model.save_pretrained(path)
    return path
