"""`wenlan models`: the architectures in the registry."""

from __future__ import annotations

import typer


def models() -> None:
    """List the bundled model architectures."""
    from rich.console import Console
    from rich.table import Table

    from ..models.registry import get_model_config, list_models

    table = Table(title="BriVL architectures")
    for column in ("name", "image backbone", "px", "text tower", "dim", "queue", "loss"):
        table.add_column(column)
    for name in list_models():
        c = get_model_config(name)
        text = c.text.hf_name or f"BERT from scratch ({c.text.bert_config.get('num_hidden_layers', '?')} layers)"
        table.add_row(name, c.image.backbone, str(c.image.image_size), text, str(c.embed_dim), str(c.queue_size), c.loss)
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
