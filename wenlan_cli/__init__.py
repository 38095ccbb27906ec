"""wenlan: train, evaluate and use BriVL, the Chinese image-text model of WenLan.

    import wenlan_cli as wenlan
    model, preprocess, tokenizer = wenlan.load("runs/demo")
    wenlan.list_models()
"""

__version__ = "0.1.0"

__all__ = ["__version__", "list_models", "load"]


def load(checkpoint, device="cpu"):
    """(model, preprocess, tokenizer) of a checkpoint or run directory; see `wenlan_cli.api`."""
    from .api import load as _load

    return _load(checkpoint, device=device)


def list_models() -> list[str]:
    """Names of the bundled architectures."""
    from .models.registry import list_models as _list_models

    return _list_models()
