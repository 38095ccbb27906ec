"""Where a command's data comes from: a named format on disk, or the synthetic default."""

from __future__ import annotations

from pathlib import Path

from .records import ImageTextRecord

SYNTH_DEFAULTS = dict(train=10000, val=1000, test=1000, seed=0)
# webdataset tar shards (`wenlan data convert`): streamed for training, read by byte range otherwise.
STREAM_DATASET = "webdataset"


def synthetic_dir(train: int, val: int, test: int, seed: int, progress=None) -> Path:
    from .synthetic import cached_synthetic_dataset

    return cached_synthetic_dataset(train=train, val=val, test=test, seed=seed, progress=progress)


def dataset_names() -> list[str]:
    """Every --dataset a command accepts: the synthetic default and the registered readers."""
    from .readers import available_datasets

    return sorted({"synth", STREAM_DATASET, *available_datasets()})


def load_records(
    dataset: str,
    data_dir: str | Path | None,
    split: str,
    *,
    synth: dict | None = None,
    progress=None,
    **options,
) -> list[ImageTextRecord]:
    """Records of `split`. `dataset="synth"` without `data_dir` uses (and first generates)
    the cached synthetic dataset; with a `data_dir` it reads that folder as AIC-ICC."""
    from ..errors import UsageError
    from .readers import read_split

    check_dataset_options(dataset, data_dir)
    if dataset == STREAM_DATASET:
        from .shards import read_webdataset

        if options:
            raise UsageError(f"the dataset {STREAM_DATASET!r} has no option {next(iter(options))!r} (it takes none).")
        return read_webdataset(data_dir, split)
    if dataset == "synth":
        if data_dir is None:
            data_dir = synthetic_dir(**{**SYNTH_DEFAULTS, **(synth or {})}, progress=progress)
        return read_split("aic-icc", data_dir, split, **options)
    return read_split(dataset, data_dir, split, **options)


def check_dataset_options(dataset: str, data_dir: str | Path | None) -> None:
    """The usage errors of --dataset / --data-dir, raised before anything is read, so a
    command can report them before its other (slower) checks."""
    from ..errors import UsageError
    from .readers import available_datasets

    if dataset == STREAM_DATASET:
        if data_dir is None:
            raise UsageError(f"--dataset {STREAM_DATASET} needs --data-dir (a folder of shards or a pattern such as 'shards/train-{{000000..000009}}.tar').")
        return
    if dataset != "synth" and dataset not in available_datasets():
        raise UsageError(f"unknown dataset {dataset!r}; choose one of: {', '.join(dataset_names())}.")
    if dataset != "synth" and data_dir is None:
        raise UsageError(f"--dataset {dataset} needs --data-dir.")
