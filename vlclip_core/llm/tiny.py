"""A tiny offline chat LLM (Llama, seeded random weights, BPE tokenizer from built-in words) for tests."""

from __future__ import annotations

import logging
import os
import string

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from vlclip_core.models.tiny import seeded

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<s>{{ message['role'] }}\n{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)
_WORDS = (
    "red blue green black white grey navy beige pink brown cotton wool linen leather denim silk polyester "
    "dress shirt shoe sneaker boot jacket coat sweater skirt jeans sock bag backpack lamp desk table chair "
    "sofa mug bottle phone case watch ring necklace running hiking casual formal summer winter women men "
    "kids unisex size small medium large colour color material brand pack pair set lightweight waterproof "
    "breathable soft comfortable durable slim fit long short sleeve neck collar zip button pocket strap "
    "product description title type attributes evaluate rewrite summary missing reasons pass true false "
    "the a an with and for of in on to is it this that from by as at your our new best sale free shipping"
).split()


def build_tiny_llm(out_dir: str, seed: int = 0) -> str:
    """Build and save `<out_dir>/llm`, which AutoTokenizer/AutoModelForCausalLM.from_pretrained load."""
    path = os.path.join(out_dir, "llm")
    tokenizer = build_tiny_tokenizer()
    model = _tiny_model(tokenizer, seed)
    tokenizer.save_pretrained(path)
    model.save_pretrained(path)
    log.info(
        "tiny LLM (%d parameters, vocabulary %d) saved to %s", model.num_parameters(), len(tokenizer), path
    )
    return path


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-free BPE tokenizer over printable ASCII, trained offline on a built-in product vocabulary."""
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    bpe.decoder = decoders.Metaspace(prepend_scheme="first")
    alphabet = [c for c in string.printable if c not in " \t\r\x0b\x0c"]
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=SPECIAL_TOKENS, initial_alphabet=alphabet, show_progress=False
    )
    bpe.train_from_iterator(_corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _corpus() -> list:
    n = len(_WORDS)
    return [" ".join(_WORDS[i:] + _WORDS[:i]) for i in range(0, n, 3)]


def _tiny_model(tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    with seeded(seed):
        model = LlamaForCausalLM(config)
    model.generation_config.do_sample = False
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()
