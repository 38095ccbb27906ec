"""BriVL's text tower: a Hugging Face encoder, a Transformer over its states, an MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TextTowerConfig
from ..errors import UsageError
from .layers import SequenceHead, train_only_top


def create_language_model(
    config: TextTowerConfig, vocab_size: int | None, pretrained: bool = False, language_config: dict | None = None
) -> nn.Module:
    """The pretrained model (hub name or local directory), a model of the architecture a
    checkpoint recorded (`language_config`, no hub needed), or a BertModel from the config."""
    from transformers import AutoConfig, AutoModel, BertConfig, BertModel

    if language_config is not None:
        settings = dict(language_config)
        model_type = settings.pop("model_type", "bert")
        hf_config = AutoConfig.for_model(model_type, **settings)
        model = AutoModel.from_config(hf_config, trust_remote_code=config.trust_remote_code)
    elif pretrained:
        if not config.hf_name:
            raise UsageError("--pretrained needs text.hf_name in the model config.")
        try:
            model = AutoModel.from_pretrained(config.hf_name, trust_remote_code=config.trust_remote_code)
        except (OSError, ValueError) as exc:
            raise UsageError(
                f"could not load the pretrained text model {config.hf_name!r} ({type(exc).__name__}); "
                "without network access, download it elsewhere and point text.hf_name "
                "(or --text-weights) at the local directory."
            ) from None
    else:
        settings = dict(config.bert_config)
        if vocab_size is not None:
            settings["vocab_size"] = vocab_size
        model = BertModel(BertConfig(**settings), add_pooling_layer=False)
    # The pooler is never used; unused parameters would also upset DDP.
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model


def encoder_layers(model: nn.Module) -> list[nn.Module]:
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layer", None) or getattr(encoder, "layers", None)
    if layers is None:
        raise UsageError(
            f"text.trainable_layers is set but {type(model).__name__} has no encoder.layer list."
        )
    return list(layers)


class TextEncoder(nn.Module):
    """Token ids -> one vector per text in the joint space (not yet normalised)."""

    def __init__(
        self,
        config: TextTowerConfig,
        embed_dim: int,
        vocab_size: int | None = None,
        pretrained: bool = False,
        language_config: dict | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.language_model = create_language_model(config, vocab_size, pretrained, language_config)
        hidden = self.language_model.config.hidden_size
        self.head = SequenceHead(
            hidden,
            embed_dim,
            layers=config.encoder_layers,
            heads=config.encoder_heads,
            ff_dim=config.encoder_ff_dim,
            mlp_hidden_dim=config.mlp_hidden_dim,
            dropout=config.dropout,
        )
        if config.trainable_layers is not None:
            train_only_top(self.language_model, encoder_layers(self.language_model), config.trainable_layers)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.config.language_model_sees_padding:
            return self.forward_padded(input_ids, attention_mask)
        states = self.language_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(states, attention_mask.bool())

    def forward_padded(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The released BriVL's text path: pad to max_length, BERT sees the padding."""
        extra = self.config.max_length - input_ids.shape[1]
        if extra > 0:
            pad_id = self.language_model.config.pad_token_id or 0
            input_ids = F.pad(input_ids, (0, extra), value=pad_id)
            attention_mask = F.pad(attention_mask, (0, extra), value=0)
        states = self.language_model(input_ids=input_ids).last_hidden_state
        return self.head(states, attention_mask.bool())
