"""The download stage's work: fetch the corpus (builtin, local files or the Hub) and split it into train/test."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset
from datasets.exceptions import DatasetGenerationError

from lmpipe.config.schema import DataConfig
from lmpipe.data import builtin_corpus
from lmpipe.data.file_formats import DECOMPRESSION_ERRORS, builder_for, unreadable_files_error
from lmpipe.data.hub import require_hub
from lmpipe.data.sources import describe_source, local_files
from lmpipe.errors import PipelineInputError

_log = logging.getLogger(__name__)


def load_source(data: DataConfig, cache_dir: Path) -> Dataset:
    """The raw corpus as one Dataset, before the train/test split."""
    if data.source == "builtin":
        return Dataset.from_list(builtin_corpus.builtin_documents(data.builtin_documents, seed=data.seed))
    if data.source == "local":
        files = local_files(data)
        builder = builder_for(files, data.format)
        try:
            return load_dataset(builder, data_files=[str(f) for f in files], split=data.split, cache_dir=str(cache_dir))
        except (DatasetGenerationError, *DECOMPRESSION_ERRORS) as error:  # a bad line or row, a truncated archive
            raise unreadable_files_error(files, builder, error) from error
        except ValueError as error:  # no rows, a bad split slice, unreadable rows
            if "corresponds to no data" in str(error):  # what `datasets` says of an empty split
                raise PipelineInputError(
                    f"data.path: local dataset {data.path!r} split {data.split!r} has 0 rows"
                ) from None
            raise PipelineInputError(
                f"data.path: cannot read {data.path!r} as {builder}: {str(error).splitlines()[0]}"
            ) from error
    require_hub(
        f"dataset {data.path!r}",
        field="data.path",
        alternatives="Use data.source=local with data.path pointing at json/jsonl/csv/parquet/txt files, "
        "or data.source=builtin for the offline corpus",
    )
    # The user's Hugging Face cache, not ours: with HF_HUB_OFFLINE=1 that is where a copy is found.
    return load_dataset(data.path, data.hub_config_name, split=data.split, revision=data.revision)


def split_train_test(dataset: Dataset, test_size: float, seed: int, origin: str) -> DatasetDict:
    if len(dataset) == 0:
        raise PipelineInputError(f"data: {origin} has 0 rows")
    # Sized as datasets sizes them: the test split rounds up, the train split gets the rest.
    test_rows = math.ceil(len(dataset) * test_size)
    if test_rows < 1 or len(dataset) - test_rows < 1:
        raise PipelineInputError(
            f"data.test_size={test_size}: {origin} has only {len(dataset)} rows, too few for a train/test split"
        )
    return dataset.train_test_split(test_size=test_size, seed=seed)


def download_dataset(
    data: DataConfig, out_dir: Path, log: logging.Logger | logging.LoggerAdapter = _log
) -> DatasetDict:
    """Load the corpus, split it, save it under out_dir/dataset (Arrow)."""
    cache_dir = out_dir / ".hf-cache"
    origin = describe_source(data)
    splits = split_train_test(load_source(data, cache_dir), data.test_size, data.seed, origin)
    splits.save_to_disk(str(out_dir / "dataset"))
    shutil.rmtree(cache_dir, ignore_errors=True)  # save_to_disk copied what we keep
    log.info(f"download: {origin} -> {len(splits['train'])} train / {len(splits['test'])} test rows")
    return splits
