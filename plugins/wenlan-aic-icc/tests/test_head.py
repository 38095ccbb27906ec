"""The caption head: it overfits a handful of captions; checkpoints round-trip; tower modes."""

from __future__ import annotations

import pytest
import torch

from wenlan_aic_icc.decoding import DecodeOptions
from wenlan_aic_icc.finetune import CaptionFinetuner, FinetuneConfig
from wenlan_aic_icc.generate import caption_records
from wenlan_aic_icc.model import CaptionModel, HeadConfig, configure_tower, count_trainable, tower_is_frozen


def _captioner(pretrain_checkpoint, **head):
    from wenlan_cli.loading import load_checkpoint

    pretrain = load_checkpoint(pretrain_checkpoint)
    tok = pretrain.tokenizer
    config = HeadConfig(
        vocab_size=len(tok), memory_dim=pretrain.config.image.region_dim, bos_id=tok.cls_token_id,
        eos_id=tok.sep_token_id, pad_id=tok.pad_token_id, **{"d_model": 64, "layers": 2, "heads": 4, "ff_dim": 128, "dropout": 0.0, **head},
    )
    torch.manual_seed(0)
    return CaptionModel(pretrain.model.image_encoder, config), pretrain


def test_head_overfits_a_handful_of_captions(tmp_path, cap_data, pretrain_checkpoint):
    """Teacher forcing on 4 images x 1 caption: the loss falls and greedy decoding from the
    images reproduces every caption exactly."""
    from wenlan_cli.data.pipeline import tokenize_all
    from wenlan_cli.data.sources import load_records

    torch.set_num_threads(1)
    model, pretrain = _captioner(pretrain_checkpoint)
    configure_tower(model, "frozen")
    records = load_records("synth", cap_data, "train")[:4]
    for record in records:
        record.captions = record.captions[:1]
    tok = pretrain.tokenizer
    trainer = CaptionFinetuner(FinetuneConfig(checkpoint=str(pretrain_checkpoint), out=str(tmp_path), label_smoothing=0.0))
    trainer.workers = 0
    memory, memory_mask, kept = trainer.cache_memory(model, records, pretrain.settings, torch.device("cpu"))
    assert kept == [0, 1, 2, 3]
    ids = tokenize_all(tok, [r.captions[0] for r in records], 64)
    from wenlan_cli.data.pipeline import pad_token_ids

    input_ids, mask = pad_token_ids(ids, tok.pad_token_id)
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=3e-3)
    model.train()
    model.image_encoder.eval()
    trainer.model, trainer.state.optimizer = model, optimizer
    losses = [trainer.learn((memory, memory_mask), input_ids, mask) for _ in range(150)]
    assert losses[-1] < 0.05 < losses[0]
    out = caption_records(model, tok, records, pretrain.settings, device=torch.device("cpu"), options=DecodeOptions(max_len=64))
    assert out.captions == {r.image_id: r.captions[0] for r in records}


def test_caption_checkpoint_round_trip(tmp_path, cap_data, pretrain_checkpoint):
    from wenlan_cli.data.sources import load_records

    from wenlan_aic_icc.checkpoint import load_caption_checkpoint, save_caption_checkpoint

    model, pretrain = _captioner(pretrain_checkpoint, d_model=32, layers=1, heads=2, ff_dim=64)
    with torch.no_grad():
        model.head.output.bias.normal_()
    path = save_caption_checkpoint(
        tmp_path / "best", model, pretrain.tokenizer, pretrain.config, {"decode": {"beam_size": 2, "length_penalty": 0.5, "max_len": 12}},
    )
    assert {"config.json", "model.safetensors", "vocab.txt"} <= {p.name for p in path.iterdir()}
    assert not list(tmp_path.glob(".tmp-*"))
    loaded = load_caption_checkpoint(tmp_path)  # a run directory: its best/
    assert loaded.path == path
    assert loaded.decode == DecodeOptions(beam_size=2, length_penalty=0.5, max_len=12)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    records = load_records("synth", cap_data, "val")[:3]
    options = DecodeOptions(beam_size=2, max_len=12)
    model.eval()
    a = caption_records(model, pretrain.tokenizer, records, pretrain.settings, device=torch.device("cpu"), options=options)
    b = caption_records(loaded.model, loaded.tokenizer, records, loaded.settings, device=torch.device("cpu"), options=options)
    assert a.captions == b.captions


def test_a_pretrain_checkpoint_is_not_a_caption_checkpoint(pretrain_checkpoint):
    from wenlan_cli.errors import CheckpointError

    from wenlan_aic_icc.checkpoint import load_caption_checkpoint

    with pytest.raises(CheckpointError, match="not a caption checkpoint"):
        load_caption_checkpoint(pretrain_checkpoint)


def test_tower_modes_choose_what_trains(pretrain_checkpoint):
    from wenlan_cli.errors import UsageError

    model, _ = _captioner(pretrain_checkpoint, d_model=32, layers=1, heads=2, ff_dim=64)
    configure_tower(model, "frozen")
    assert tower_is_frozen(model) and count_trainable(model.head) > 0
    configure_tower(model, "top", 0)
    backbone = model.image_encoder.backbone
    assert not any(p.requires_grad for p in backbone.blocks.parameters())
    assert all(p.requires_grad for p in model.image_encoder.region_proj.parameters())
    assert not any(p.requires_grad for p in model.image_encoder.head.mlp.parameters())  # unused by captions
    configure_tower(model, "top", 2)
    assert all(p.requires_grad for p in backbone.blocks[-1].parameters())
    assert not any(p.requires_grad for p in backbone.blocks[-3].parameters())
    configure_tower(model, "all")
    assert all(p.requires_grad for p in backbone.parameters())
    with pytest.raises(UsageError, match="choose 0 to"):
        configure_tower(model, "top", 99)
    with pytest.raises(UsageError, match="not both"):
        FinetuneConfig(checkpoint="x", freeze_tower=True, train_top_blocks=1).validate()


def test_frozen_tower_run_with_a_character_vocabulary(tmp_path, cap_data, pretrain_checkpoint):
    """The cached-feature path end to end: --freeze-tower --char-vocab --image-size, two steps."""
    import json

    from wenlan_aic_icc.checkpoint import load_caption_checkpoint
    from wenlan_aic_icc.finetune import CaptionFinetuner
    from wenlan_cli.data.sources import load_records

    cfg = FinetuneConfig(
        checkpoint=str(pretrain_checkpoint), data_dir=str(cap_data), out=str(tmp_path), steps=2, batch_size=8,
        eval_every=0, freeze_tower=True, char_vocab=True, meteor=False, d_model=32, layers=1, heads=2, ff_dim=64,
        max_len=8, log_every=1, image_size=64,
    )
    result = CaptionFinetuner(cfg).run()
    assert result.step == 2 and result.scores["step"] == 2
    loaded = load_caption_checkpoint(tmp_path)
    assert loaded.info["tokenizer"] == "char-vocab" and loaded.info["tower"]["mode"] == "frozen"
    assert loaded.settings.image_size == loaded.model_config.image.image_size == 64  # --image-size is kept
    from wenlan_cli.models.tokenizer import build_char_vocab

    vocab = build_char_vocab(c for r in load_records("synth", cap_data, "train") for c in r.captions)
    assert len(loaded.tokenizer) == len(vocab) == loaded.model.head_config.vocab_size
    pretrained = load_checkpoint_state(pretrain_checkpoint)
    for key, value in loaded.model.image_encoder.state_dict().items():
        assert torch.equal(value, pretrained["image_encoder." + key]), key  # the tower did not move
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [1, 2]


def load_checkpoint_state(path):
    from wenlan_cli.engine.checkpoint import load_query_state, resolve_checkpoint

    return load_query_state(resolve_checkpoint(path))
