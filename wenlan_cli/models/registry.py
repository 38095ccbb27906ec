"""The model registry: architectures are JSON files in `wenlan_cli/model_configs/`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..config import ModelConfig, load_model_config
from ..errors import UsageError


def _config_dir():
    return resources.files("wenlan_cli") / "model_configs"


def list_models() -> list[str]:
    """Names of the bundled architectures (`brivl-tiny`, `brivl-base`, ...)."""
    return sorted(p.name[: -len(".json")] for p in _config_dir().iterdir() if p.name.endswith(".json"))


def get_model_config(name_or_path: str | Path) -> ModelConfig:
    """A bundled architecture by name, or a JSON file of the same shape."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".json" or candidate.exists():
        return load_model_config(candidate)
    names = list_models()
    if str(name_or_path) not in names:
        raise UsageError(f"unknown model {name_or_path!r}; choose one of {', '.join(names)} or give a JSON file.")
    with resources.as_file(_config_dir() / f"{name_or_path}.json") as path:
        return load_model_config(path)


def create_model(
    config: ModelConfig,
    vocab_size: int | None = None,
    pretrained: bool = False,
    for_training: bool = True,
    language_config: dict | None = None,
):
    """A BriVL of this architecture. `pretrained` loads the towers' published weights;
    `language_config` rebuilds a text model a checkpoint recorded, with no hub access."""
    from .brivl import BriVL
    from .size import check_fits_in_memory

    check_fits_in_memory(config, vocab_size, training=for_training)
    return BriVL(config, vocab_size=vocab_size, pretrained=pretrained, for_training=for_training, language_config=language_config)
