"""Checkpoint converters (`wenlan convert ...`)."""

from __future__ import annotations

from pathlib import Path


def convert_brivl(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    model: str = "brivl-base",
    tokenizer: str | None = None,
    image_size: int | None = None,
) -> Path:
    """Released BriVL-1.0 weights -> a wenlan checkpoint directory (no hub access needed
    for the weights; the tokenizer comes from `tokenizer` or the config's text model)."""
    import dataclasses

    from transformers import BertConfig

    from ..models.normalization import resolve_image_normalization
    from ..models.registry import create_model, get_model_config
    from ..models.tokenizer import load_pretrained_tokenizer
    from ..engine.checkpoint import CheckpointContents, write_checkpoint
    from .brivl import check_against, map_released_keys, read_released_state, released_model_config

    conversion = map_released_keys(read_released_state(checkpoint))
    # A config that leaves image.mean/std out gets the backbone's own from timm (recorded in the checkpoint).
    config = resolve_image_normalization(released_model_config(get_model_config(model), image_size), pretrained=False)
    embeddings = conversion.state.get("text_encoder.language_model.embeddings.word_embeddings.weight")
    if embeddings is None:
        from ..errors import CheckpointError

        raise CheckpointError(f"{checkpoint} has no text word embeddings (textencoder.backbone.bert.embeddings.word_embeddings.weight).")
    vocab_size = embeddings.shape[0]
    language_config = BertConfig(**{**config.text.bert_config, "vocab_size": vocab_size}).to_dict()
    source = tokenizer or config.text.hf_name
    if source is None:
        from ..errors import UsageError

        raise UsageError("--tokenizer is needed: the model config names no text model to take it from.")
    tok = load_pretrained_tokenizer(source)
    if len(tok) != vocab_size:
        from ..errors import UsageError

        raise UsageError(f"the tokenizer {source} has {len(tok)} tokens but the checkpoint's text model has {vocab_size}.")
    if tokenizer:
        config = dataclasses.replace(config, text=dataclasses.replace(config.text, hf_name=str(tokenizer)))
    brivl = create_model(config, vocab_size=vocab_size, for_training=False, language_config=language_config)
    state = dict(conversion.state)
    for key, value in brivl.query_state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    check_against(brivl, state)
    brivl.load_state_dict(state, strict=True)
    info = {
        "step": 0,
        "vocab_size": vocab_size,
        "text_model_config": brivl.text_encoder.language_model.config.to_dict(),
        "converted_from": str(Path(checkpoint).resolve()),
        "ignored_keys": len(conversion.ignored),
    }
    return write_checkpoint(
        Path(out_dir),
        CheckpointContents(model_config=config, query_state=brivl.query_state_dict(), tokenizer=tok, info=info),
    )
