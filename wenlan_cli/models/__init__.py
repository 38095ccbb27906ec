"""BriVL towers, the full model, losses, queues and the config registry."""

from .registry import create_model, get_model_config, list_models

__all__ = ["create_model", "get_model_config", "list_models"]
