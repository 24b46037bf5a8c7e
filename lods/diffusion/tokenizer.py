"""A word-level tokenizer for small embedded models (toyworld, the tiny test pipeline).

It is a ``transformers.PreTrainedTokenizerFast`` backed by a ``tokenizers`` WordLevel model, so it
saves with ``save_pretrained`` into an SD-format ``tokenizer/`` folder and loads back with
``AutoTokenizer.from_pretrained`` like any other tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
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
