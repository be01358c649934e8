"""Building the tokenizer a model reads (lmpipe.data.tokenizer_choice says which): pretrained (a name or a
local directory), or a byte-level BPE trained here on the train split (on a sample of it within
tokenizer.train_sample: lmpipe.data.tokenizer_sample).

The trained BPE carries every special token both objectives need (bos/eos for CLM, mask and pad
for MLM) and wraps each text as `<s> text </s>`, so documents stay separated once group
concatenates them, and the causal model learns where a document ends.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import AddedToken, ByteLevelBPETokenizer
from tokenizers.processors import RobertaProcessing
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from lmpipe.config.schema import PipelineConfig
from lmpipe.data.hub import is_local_reference, require_hub
from lmpipe.data.tokenizer_choice import tokenizer_origin
from lmpipe.data.tokenizer_sample import SampleTally, SplitSize, describe_sample, sampled_texts, split_size
from lmpipe.errors import PipelineInputError

if TYPE_CHECKING:  # a type only: which objective is in the key, not the table's code
    from lmpipe.objectives import Objective

_log = logging.getLogger(__name__)

SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "pad_token": "<pad>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "mask_token": "<mask>",
}


def train_bpe_tokenizer(texts: Iterable[list[str]], vocab_size: int, min_frequency: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `texts` (batches of strings), with RoBERTa-style specials usable for CLM and MLM."""
    bpe = ByteLevelBPETokenizer()
    specials = [SPECIAL_TOKENS[k] for k in ("bos_token", "pad_token", "eos_token", "unk_token", "mask_token")]
    bpe.train_from_iterator(
        texts,
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        show_progress=False,
    )
    bpe.post_processor = RobertaProcessing(
        (SPECIAL_TOKENS["eos_token"], bpe.token_to_id(SPECIAL_TOKENS["eos_token"])),  # sep
        (SPECIAL_TOKENS["bos_token"], bpe.token_to_id(SPECIAL_TOKENS["bos_token"])),  # cls
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        # lstrip lets "a <mask> b" mask the word with its leading space, as RoBERTa does.
        **{**SPECIAL_TOKENS, "mask_token": AddedToken(SPECIAL_TOKENS["mask_token"], lstrip=True)},
    )


def load_pretrained_tokenizer(name_or_path: str, field: str, revision: str | None = None) -> PreTrainedTokenizerBase:
    if not is_local_reference(name_or_path):
        require_hub(
            f"tokenizer {name_or_path!r}",
            field=field,
            alternatives="Point it at a local save_pretrained directory, or set it to null to train one here",
        )
    try:  # trust_remote_code=False, said explicitly, so transformers never asks on stdin
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=False)
    except ValueError as error:  # a tokenizer that needs the repository's own code
        raise PipelineInputError(
            f"{field}={name_or_path!r}: {str(error).splitlines()[0]} (custom tokenizer code is never run)"
        ) from None
    if not tokenizer.is_fast:
        raise PipelineInputError(f"{field}={name_or_path!r} has no fast tokenizer; batched tokenization needs one")
    return tokenizer


def build_tokenizer(
    config: PipelineConfig,
    objective: Objective,
    train_texts: Iterable[list[str]],
    flatten_report: Path | None = None,
    record_dir: Path | None = None,
    log: logging.Logger | logging.LoggerAdapter = _log,
) -> PreTrainedTokenizerBase:
    """The configured pretrained tokenizer, or a BPE trained on a sample of train_texts (batches of strings)
    within tokenizer.train_sample, sized from flatten_report; the sample and its training time are logged,
    and written to record_dir/tokenizer_sample.json when given."""
    source, revision, field = tokenizer_origin(config, objective)
    if source is not None:
        return load_pretrained_tokenizer(source, field, revision)
    size = split_size(flatten_report, "train") if flatten_report is not None else SplitSize()
    tally = SampleTally()
    started = time.perf_counter()  # the sample is read as the BPE trains: the time covers both
    sample = sampled_texts(train_texts, size, config.tokenizer.train_sample, config.data.seed, tally)
    tokenizer = train_bpe_tokenizer(sample, config.tokenizer.vocab_size, config.tokenizer.min_frequency)
    tally.seconds = time.perf_counter() - started
    log.info(f"tokenize: BPE trained on {describe_sample(tally, size)}")
    if record_dir is not None:
        record = {**asdict(tally), "seconds": round(tally.seconds, 2)}
        (record_dir / "tokenizer_sample.json").write_text(json.dumps(record, indent=2))
    return tokenizer
