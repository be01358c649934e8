"""download: fetch the corpus (builtin, local files or the Hub) and split it into train/test."""

from __future__ import annotations

import glob
import logging
import math
import shutil
import sys
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_dataset
from prefect import get_run_logger, task

from lmpipe import builtin_corpus
from lmpipe.artifacts import artifact_dir, cached_stage, code_version, ensure_built, file_digest
from lmpipe.config import DataConfig, PipelineConfig
from lmpipe.errors import PipelineInputError, retry_unless_input_error
from lmpipe.hub import require_hub

_log = logging.getLogger(__name__)

# Suffix -> the `datasets` builder that reads it.
_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


# ---------------------------------------------------------------------------- sources


def local_files(data: DataConfig) -> list[Path]:
    """The files data.path names (a path or a glob), sorted; an error if there are none."""
    pattern = str(Path(data.path or "").expanduser())
    files = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not files:
        raise PipelineInputError(f"data.path: no file matches {data.path!r}")
    return files


def builder_for(files: list[Path], declared: str) -> str:
    if declared != "auto":
        return {"jsonl": "json", "txt": "text"}.get(declared, declared)
    builders = {_BUILDERS.get(f.suffix.lower()) for f in files}
    if None in builders or len(builders) != 1:
        suffixes = sorted({f.suffix or "(none)" for f in files})
        raise PipelineInputError(
            f"data.format: cannot tell the format of {suffixes}; set data.format to one of "
            "json, jsonl, csv, parquet, txt"
        )
    return builders.pop()


def load_source(data: DataConfig, cache_dir: Path) -> Dataset:
    """The raw corpus as one Dataset, before the train/test split."""
    if data.source == "builtin":
        return Dataset.from_list(builtin_corpus.builtin_documents(data.builtin_documents, seed=data.seed))
    if data.source == "local":
        files = local_files(data)
        builder = builder_for(files, data.format)
        try:
            return load_dataset(builder, data_files=[str(f) for f in files], split=data.split, cache_dir=str(cache_dir))
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


def describe_source(data: DataConfig) -> str:
    if data.source == "builtin":
        return "the builtin stdlib-docstring corpus"
    return f"{data.source} dataset {data.path!r} split {data.split!r}"


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


# ---------------------------------------------------------------------------- caching


def source_identity(data: DataConfig) -> dict[str, Any]:
    """What determines the raw corpus: file contents for local data, the stdlib for builtin."""
    if data.source == "local":
        return {
            "files": {str(f.resolve()): file_digest(f) for f in local_files(data)},
            "format": data.format,
            "split": data.split,
        }
    if data.source == "builtin":
        return {
            "documents": data.builtin_documents,
            "stdlib": str(builtin_corpus.stdlib_root()),
            "python": sys.version.split()[0],
            "corpus_code": code_version(builtin_corpus.__file__),
        }
    return {"dataset": data.path, "config_name": data.hub_config_name, "split": data.split, "revision": data.revision}


def download_output_dir(config: PipelineConfig) -> Path:
    data = config.data
    inputs = {
        "source": data.source,
        "identity": source_identity(data),
        "test_size": data.test_size,
        "seed": data.seed,
        "code": code_version(__file__),
    }
    return artifact_dir(config.artifacts.root, "download", inputs)


@task(
    name="download",
    retries=3,
    retry_delay_seconds=[2, 5, 15],
    retry_condition_fn=retry_unless_input_error,
    **cached_stage(download_output_dir),
)
def download(config: PipelineConfig) -> str:
    """Fetch the corpus and save a train/test split; returns the artifact directory."""
    out = download_output_dir(config)
    log = get_run_logger()
    ensure_built(
        out,
        "download",
        {"data": config.data.model_dump()},
        lambda scratch: download_dataset(config.data, scratch, log),
        log,
    )
    return str(out)
