"""Byte-level BPE tokenizer for the tiny models, trained locally and deterministically.

Saved as a PreTrainedTokenizerFast checkpoint (tokenizer.json + tokenizer_config.json) with a ChatML template;
eos is `<|im_end|>`, pad `<|endoftext|>`, no bos.

Byte-level, so any text round-trips (no unknown tokens); digits split one per token as in Qwen, so numbers in
math prompts tokenize the same way wherever they appear. One tokenizer serves every tiny model, which lets an
eagle3 draft share its target's vocabulary.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from eval_harness.models.corpus import CORPUS

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS: tuple[str, ...] = (ENDOFTEXT, IM_START, IM_END)
# Plain added tokens, so reasoning parsers that look up `</think>` find a single id, as in Qwen3.
THINK_TOKENS: tuple[str, ...] = ("<think>", "</think>")
# BPE vocabulary size; with the think tokens the total is 1024. The corpus saturates near 1300.
BPE_VOCAB = 1022
MODEL_MAX_LENGTH = 131072

# ChatML. `content` is used as a string, so vLLM picks its "string" content format.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def train_tokenizer(vocab_size: int = BPE_VOCAB) -> Tokenizer:
    """Train the BPE on the built-in corpus. Deterministic: no seed involved."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [line for text in CORPUS for line in text.splitlines(keepends=True)]
    tok.train_from_iterator(lines, trainer=trainer)
    tok.add_tokens(list(THINK_TOKENS))
    return tok


def tokenizer_config() -> dict[str, Any]:
    """tokenizer_config.json written by hand: transformers 5 would write `TokenizersBackend` and a list-valued
    `extra_special_tokens`, which transformers 4.x (still pinned by some vLLM platforms) cannot load."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": ENDOFTEXT,
        "unk_token": None,
        "additional_special_tokens": [IM_START],
        "model_max_length": MODEL_MAX_LENGTH,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }


@lru_cache(maxsize=1)
def _trained_json() -> str:
    return train_tokenizer().to_str()


def load_tokenizer() -> Tokenizer:
    """The trained tokenizer; trained once per process, since every model ships the same one."""
    return Tokenizer.from_str(_trained_json())


def save_tokenizer(out_dir: Path) -> Tokenizer:
    """Write tokenizer.json and tokenizer_config.json; return the trained tokenizer."""
    tok = load_tokenizer()
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    text = json.dumps(tokenizer_config(), indent=2, sort_keys=True) + "\n"
    (out_dir / "tokenizer_config.json").write_text(text, encoding="utf-8")
    return tok


def token_id(tok: Tokenizer, token: str) -> int:
    found = tok.token_to_id(token)
    if found is None:
        raise KeyError(token)
    return found
