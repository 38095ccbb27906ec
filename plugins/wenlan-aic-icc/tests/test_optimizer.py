"""The caption fine-tuner's optimizer (the core's make_optimizer with the decoder's marker):
the same parameters decayed, at the same rates, as before the core's Trainer."""

from __future__ import annotations

from wenlan_aic_icc.finetune import CaptionFinetuner, FinetuneConfig
from wenlan_aic_icc.model import CaptionModel, HeadConfig


def test_the_caption_optimizer_decays_the_parameters_it_always_did():
    from wenlan_cli.models.registry import create_model, get_model_config

    config = get_model_config("brivl-tiny")
    tower = create_model(config, vocab_size=50, pretrained=False).image_encoder
    head = HeadConfig(vocab_size=50, memory_dim=config.image.region_dim, bos_id=1, eos_id=2, pad_id=0, d_model=32, layers=1, heads=2, ff_dim=64)
    model = CaptionModel(tower, head)
    optimizer = CaptionFinetuner(FinetuneConfig(checkpoint="x", lr=1e-3, weight_decay=0.02)).make_optimizer(model)
    found = {(id(p), g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    expected = set()  # the rule before the core's Trainer: per part, "embed" in the name is not decayed
    for part, lr in ((model.head, 1e-3), (model.image_encoder, 5e-4)):
        for name, p in part.named_parameters():
            if p.requires_grad:
                expected.add((id(p), lr, 0.02 if p.ndim >= 2 and "embed" not in name else 0.0))
    assert found == expected
    kept = {n for n, p in model.named_parameters() if (id(p), 1e-3, 0.0) in found or (id(p), 5e-4, 0.0) in found}
    assert {"head.token_embed.weight", "head.position_embed.weight", "image_encoder.box_embed.weight"} <= kept
    assert all(g["params"] for g in optimizer.param_groups)  # empty groups are left out
