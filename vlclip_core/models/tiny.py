"""Tiny offline models with seeded random weights, saved where the real loaders load them from."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import string
from typing import Dict

import torch

log = logging.getLogger(__name__)

TINY_CLIP_NAME = "vlclip-tiny"
TINY_CLIP_CHECKPOINT = "open_clip_model.pt"
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Words of the demo catalog (product types and common title words); the rest falls back to characters.
_CATALOG_WORDS = """
running shoe shoes handbag table lamp coffee mug t - shirt backpack wristwatch sunglasses
men women mens womens unisex kids black white red blue green grey gray brown pink navy beige silver gold
leather canvas cotton steel ceramic glass plastic wood metal mesh nylon polyester
small medium large size pack set with for and of the a in on new classic sport sports casual
trail road light lightweight waterproof travel office desk bedside led watch analog digital strap
polarized frame lens cup ounce oz tote shoulder bag crossbody laptop school hiking graphic crew neck tee
"""
READY_FILE = "READY"


def build_tiny_clip(out_dir: str, seed: int = 0) -> Dict[str, str]:
    """Write <out_dir>/clip/vlclip-tiny.json and <out_dir>/clip/open_clip_model.pt (seeded weights).

    Returns {"model_name", "config_dir", "checkpoint"}: the values of models.clip.* that load it.
    """
    return save_seeded_clip(out_dir, TINY_CLIP_NAME, TINY_CLIP_CONFIG, seed)


def save_seeded_clip(out_dir: str, name: str, architecture: dict, seed: int) -> Dict[str, str]:
    """Register open_clip architecture `name`, build it with seeded weights, save it under <out_dir>/clip."""
    import open_clip

    from vlclip_core.models.clip import register_config_dir

    clip_dir = os.path.join(out_dir, "clip")
    os.makedirs(clip_dir, exist_ok=True)
    with open(os.path.join(clip_dir, f"{name}.json"), "w", encoding="utf-8") as fh:
        json.dump(architecture, fh, indent=2, sort_keys=True)
    register_config_dir(clip_dir)
    with seeded(seed):
        model = open_clip.create_model(name, pretrained=None)
    checkpoint = os.path.join(clip_dir, TINY_CLIP_CHECKPOINT)
    torch.save(model.state_dict(), checkpoint)
    return {"model_name": name, "config_dir": clip_dir, "checkpoint": checkpoint}


def build_tiny_detector(out_dir: str, seed: int = 0) -> str:
    """Write a tiny Grounding DINO (model + processor) to <out_dir>/detector and return that directory."""
    from transformers import (
        BertTokenizerFast,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
    )

    det_dir = os.path.join(out_dir, "detector")
    tokenizer = BertTokenizerFast(vocab=tiny_bert_vocab())
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 128, "longest_edge": 192})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(det_dir)
    with seeded(seed):
        model = GroundingDinoForObjectDetection(_tiny_grounding_dino_config(len(tokenizer))).eval()
    model.save_pretrained(det_dir)
    return det_dir


def build_tiny_owlv2(out_dir: str, seed: int = 0) -> str:
    """Write a tiny OWLv2 (model + processor, byte-level CLIP BPE without merges) to <out_dir>/owlv2."""
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import (
        CLIPTokenizer,
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
    )

    owl_dir = os.path.join(out_dir, "owlv2")
    chars = list(bytes_to_unicode().values())
    # specials last, as in CLIP: OWLv2 treats a query whose first id is 0 as padding
    tokens = chars + [f"{c}</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)
    image_processor = Owlv2ImageProcessor(size={"height": 64, "width": 64})
    Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(owl_dir)
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        bos_token_id=len(vocab) - 2,
        eos_token_id=len(vocab) - 1,
        pad_token_id=len(vocab) - 1,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=64,
        patch_size=16,
    )
    with seeded(seed):
        config = Owlv2Config(text_config=text, vision_config=vision, projection_dim=32)
        model = Owlv2ForObjectDetection(config)
    model.eval().save_pretrained(owl_dir)
    return owl_dir


def build_tiny_models(out_dir: str, seed: int = 0) -> Dict[str, str]:
    """Build the tiny CLIP, detector and LLM once; a READY file with the same seed makes this a no-op.

    Returns {"clip_model_name", "clip_config_dir", "clip_checkpoint", "detector", "llm"}; pass them to
    `tiny_overrides` for config overrides.
    """
    ready = os.path.join(out_dir, READY_FILE)
    if os.path.exists(ready):
        with open(ready, encoding="utf-8") as fh:
            stamp = json.load(fh)
        if stamp.get("seed") == seed:
            return stamp["paths"]
    from vlclip_core.llm.tiny import build_tiny_llm

    clip = build_tiny_clip(out_dir, seed)
    paths = {
        "clip_model_name": clip["model_name"],
        "clip_config_dir": clip["config_dir"],
        "clip_checkpoint": clip["checkpoint"],
        "detector": build_tiny_detector(out_dir, seed),
        "llm": build_tiny_llm(out_dir, seed),
    }
    with open(ready, "w", encoding="utf-8") as fh:
        json.dump({"seed": seed, "paths": paths}, fh, indent=2, sort_keys=True)
    log.info("built tiny models (seed %d) in %s", seed, out_dir)
    return paths


def tiny_overrides(paths: Dict[str, str]) -> tuple:
    """`key=value` config overrides that point models.* at the output of `build_tiny_models`."""
    overrides = (
        f"models.clip.model_name={paths['clip_model_name']}",
        f"models.clip.config_dir={paths['clip_config_dir']}",
        f"models.clip.pretrained={paths['clip_checkpoint']}",
        "models.detector.kind=grounding_dino",
        f"models.detector.path={paths['detector']}",
    )
    return overrides + ((f"models.llm.path={paths['llm']}",) if paths.get("llm") else ())


def tiny_bert_vocab() -> Dict[str, int]:
    """WordPiece vocabulary: special tokens, characters (and ## continuations) and the catalog's words."""
    chars = string.ascii_lowercase + string.digits
    tokens = _SPECIAL_TOKENS + list(chars + string.punctuation) + [f"##{c}" for c in chars]
    tokens += _CATALOG_WORDS.split() + sample_catalog_words()
    return {token: i for i, token in enumerate(dict.fromkeys(tokens))}


def sample_catalog_words() -> list:
    """Lower-cased words of the sample catalog's product names, adjectives, keywords, materials and brands."""
    from vlclip_core.tools.sample_catalog import BRANDS, PRODUCTS

    texts = list(BRANDS)
    for spec in PRODUCTS.values():
        texts += [*spec.nouns, *spec.adjectives, *spec.keywords, *spec.materials]
    return re.findall(r"[a-z0-9]+", " ".join(texts).lower())


def _tiny_grounding_dino_config(vocab_size: int):
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    backbone = SwinConfig(
        image_size=128,
        patch_size=4,
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 2, 2],
        window_size=4,
        out_features=["stage2", "stage3", "stage4"],
    )
    text = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    return GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=32,
        num_queries=30,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=128,
    )


@contextlib.contextmanager
def seeded(seed: int):
    """Seed torch's global generator for model init without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
