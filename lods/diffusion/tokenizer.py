"""Tokenizers built in code: word-level for small embedded models (toyworld, the tiny test pipeline), and a
byte-level one in CLIP's id layout for full-size random-weight architectures.

Each is a ``transformers.PreTrainedTokenizerFast`` backed by a ``tokenizers`` model, so it saves with
``save_pretrained`` into an SD-format ``tokenizer/`` folder and loads back with ``AutoTokenizer.from_pretrained``
like any other tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")


def word_level_tokenizer(words: Iterable[str], max_length: int) -> PreTrainedTokenizerFast:
    """Lower-cased, whitespace/punctuation-split tokenizer over ``words`` (unknown words -> <unk>)."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in words:
        vocab.setdefault(word.lower(), len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # splits "cube," into "cube" ","
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=max_length,
    )


# ---------------------------------------------------------------------------- CLIP id layout
CLIP_VOCAB_SIZE = 49408
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes, in CLIP's vocabulary order (GPT-2's table:
    the printable bytes first, then the others mapped to U+0100 on)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def clip_byte_tokenizer(pad_token: str = CLIP_EOS, max_length: int = 77) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer in CLIP's id layout, built in code (no vocabulary file to download).

    It is CLIP's BPE tokenizer without its merges: every word is spelled out byte by byte, and those ids are
    CLIP's own (``a</w>`` -> 320, as in the real vocabulary); ``<|startoftext|>`` is 49406 and
    ``<|endoftext|>`` 49407, and the vocabulary has CLIP's 49408 entries (the merged tokens, 512 to 49405,
    are placeholders that the tokenizer never produces). ``pad_token``: ``<|endoftext|>`` as SD 1.x pads,
    ``!`` (id 0) as SD 2.x pads. For random-weight models: real weights need their real tokenizer.
    """
    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": len(symbols) + i for i, s in enumerate(symbols)})
    vocab.update({f"<|unused{i}|>": i for i in range(len(vocab), CLIP_VOCAB_SIZE - 2)})
    vocab.update({CLIP_BOS: CLIP_VOCAB_SIZE - 2, CLIP_EOS: CLIP_VOCAB_SIZE - 1})
    if pad_token not in vocab:
        raise ValueError(f"pad_token '{pad_token}' is not in the vocabulary; choose e.g. '{CLIP_EOS}' or '!'")
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], end_of_word_suffix="</w>", unk_token=CLIP_EOS))
    backend.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{CLIP_BOS} $A {CLIP_EOS}", special_tokens=[(CLIP_BOS, vocab[CLIP_BOS]), (CLIP_EOS, vocab[CLIP_EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=CLIP_BOS,
        eos_token=CLIP_EOS,
        unk_token=CLIP_EOS,
        pad_token=pad_token,
        model_max_length=max_length,
    )
