"""The one module a task plugin imports from wenlan.

Everything a plugin may use is named in `_EXPORTS`: the task hook (`Task`), the engine
(the `Trainer` skeleton, checkpoints, device, optimizer, run length, progress), the data path
(records, datasets, collators), the models it builds on and the project's errors. Names
resolve lazily (PEP 562), so a plugin's entry point that imports this module at start-up
costs nothing until it uses a name. Anything not listed here is internal and may change
without notice; tests/test_layers.py checks that the bundled plugin imports only this.
"""

from __future__ import annotations

import importlib

# name -> (module, attribute); attribute None means the module itself.
_EXPORTS: dict[str, tuple[str, str | None]] = {
    # the task hook
    "Task": ("wenlan_cli.tasks", "Task"),
    # errors
    "WenlanError": ("wenlan_cli.errors", "WenlanError"),
    "UsageError": ("wenlan_cli.errors", "UsageError"),
    "DataError": ("wenlan_cli.errors", "DataError"),
    "TrainingError": ("wenlan_cli.errors", "TrainingError"),
    "CheckpointError": ("wenlan_cli.errors", "CheckpointError"),
    # base values
    "strict_json": ("wenlan_cli.strict_json", None),
    "ModelConfig": ("wenlan_cli.config", "ModelConfig"),
    "from_dict": ("wenlan_cli.config", "from_dict"),
    "check_number": ("wenlan_cli.config", "check_number"),
    "parse_duration": ("wenlan_cli.durations", "parse_duration"),
    "usable_cores": ("wenlan_cli.cores", "usable_cores"),
    "check_outputs": ("wenlan_cli.output_paths", "check_outputs"),
    "checkpoint_input": ("wenlan_cli.output_paths", "checkpoint_input"),
    "folder_input": ("wenlan_cli.output_paths", "folder_input"),
    "path_input": ("wenlan_cli.output_paths", "path_input"),
    "file_input": ("wenlan_cli.output_paths", "file_input"),
    # commands whose options are a config dataclass's fields (wenlan_cli/declared.py)
    "Option": ("wenlan_cli.option_spec", "Option"),
    "option": ("wenlan_cli.option_spec", "option"),
    "declared_command": ("wenlan_cli.declared", "declared_command"),
    # data
    "ImageTextRecord": ("wenlan_cli.data.records", "ImageTextRecord"),
    "load_records": ("wenlan_cli.data.sources", "load_records"),
    "check_dataset_options": ("wenlan_cli.data.sources", "check_dataset_options"),
    "ShardTrainData": ("wenlan_cli.train.shard_data", "ShardTrainData"),  # --dataset webdataset, streamed
    "collect_image_paths": ("wenlan_cli.data.imagefiles", "collect_image_paths"),
    "json_type_name": ("wenlan_cli.data.fields", "json_type_name"),
    "quote_value": ("wenlan_cli.data.paths", "quote_value"),
    "read_json": ("wenlan_cli.data.files", "read_json"),
    "CaptionTokens": ("wenlan_cli.data.pipeline", "CaptionTokens"),
    "ImageSettings": ("wenlan_cli.data.pipeline", "ImageSettings"),
    "ImageCollator": ("wenlan_cli.data.pipeline", "ImageCollator"),
    "ImageDataset": ("wenlan_cli.data.pipeline", "ImageDataset"),
    "PairCollator": ("wenlan_cli.data.pipeline", "PairCollator"),
    "PairDataset": ("wenlan_cli.data.pipeline", "PairDataset"),
    "PairSampler": ("wenlan_cli.data.pipeline", "PairSampler"),
    "normalize_images": ("wenlan_cli.data.pipeline", "normalize_images"),
    "pad_token_ids": ("wenlan_cli.data.pipeline", "pad_token_ids"),
    # models
    "ImageEncoder": ("wenlan_cli.models.image_encoder", "ImageEncoder"),
    "backbone_blocks": ("wenlan_cli.models.image_encoder", "backbone_blocks"),
    "train_only_top": ("wenlan_cli.models.layers", "train_only_top"),
    "load_tokenizer": ("wenlan_cli.models.tokenizer", "load_tokenizer"),
    "build_char_vocab": ("wenlan_cli.models.tokenizer", "build_char_vocab"),
    "tokenizer_from_vocab": ("wenlan_cli.models.tokenizer", "tokenizer_from_vocab"),
    "load_checkpoint": ("wenlan_cli.loading", "load_checkpoint"),
    "load": ("wenlan_cli.api", "load"),
    # zero-shot classification (wenlan_cli/classify.py)
    "check_templates": ("wenlan_cli.classify", "check_templates"),
    "folder_labels": ("wenlan_cli.classify", "folder_labels"),
    "label_embeddings": ("wenlan_cli.classify", "label_embeddings"),
    "zero_shot_classify": ("wenlan_cli.classify", "classify"),
    "zero_shot_accuracy": ("wenlan_cli.classify", "evaluate"),
    # engine
    "pick_device": ("wenlan_cli.engine.device", "pick_device"),
    "seed_everything": ("wenlan_cli.engine.rng", "seed_everything"),
    "make_optimizer": ("wenlan_cli.engine.optim", "make_optimizer"),
    "Trainer": ("wenlan_cli.engine.trainer", "Trainer"),
    "counting_progress": ("wenlan_cli.engine.progress", "counting_progress"),
    "CheckpointContents": ("wenlan_cli.engine.checkpoint", "CheckpointContents"),
    "write_checkpoint": ("wenlan_cli.engine.checkpoint", "write_checkpoint"),
    "is_checkpoint": ("wenlan_cli.engine.checkpoint", "is_checkpoint"),
    "load_query_state": ("wenlan_cli.engine.checkpoint", "load_query_state"),
    "model_config_of": ("wenlan_cli.engine.checkpoint", "model_config_of"),
    "read_checkpoint_info": ("wenlan_cli.engine.checkpoint", "read_checkpoint_info"),
    "CAPTION_RULE": ("wenlan_cli.engine.budget", "CAPTION_RULE"),
    "build_plan": ("wenlan_cli.engine.budget", "build_plan"),
    "plan_warnings": ("wenlan_cli.engine.budget", "plan_warnings"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    try:
        module_name, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"wenlan_cli.plugin_api has no {name!r}; a plugin may use only {', '.join(__all__)}") from None
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
