"""--pretrained: tower weights from a local copy, and a clear error when the hub is out of reach."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from wenlan_cli.errors import UsageError
from wenlan_cli.models import create_model, get_model_config
from wenlan_cli.models.tokenizer import build_char_vocab, load_pretrained_tokenizer, tokenizer_from_vocab


@pytest.fixture(scope="module")
def local_text_model(tmp_path_factory):
    """A tiny BERT saved the way a downloaded hub model sits on disk."""
    from transformers import BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = tokenizer_from_vocab(build_char_vocab(["两个红色的圆形在左上角"]))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(1)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def local_backbone(tmp_path_factory):
    """A timm backbone's weights in a local safetensors file."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(2)
    model = timm.create_model("test_efficientnet")
    path = tmp_path_factory.mktemp("timm") / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model.state_dict()


def _config(text_source=None, image_source=None):
    config = get_model_config("brivl-tiny")
    text = dataclasses.replace(config.text, hf_name=text_source)
    image = dataclasses.replace(config.image, pretrained_source=image_source, image_size=64)
    return dataclasses.replace(config, text=text, image=image, queue_size=32)


def test_text_tower_and_tokenizer_load_from_a_local_directory(local_text_model, local_backbone):
    from transformers import BertModel

    weights, _ = local_backbone
    model = create_model(_config(str(local_text_model), str(weights)), pretrained=True, for_training=False)
    reference = BertModel.from_pretrained(local_text_model)
    loaded = model.text_encoder.language_model.state_dict()
    for key, value in reference.state_dict().items():
        if not key.startswith("pooler"):
            assert torch.equal(loaded[key], value), key
    tokenizer = load_pretrained_tokenizer(str(local_text_model))
    assert tokenizer.tokenize("红色圆形") == ["红", "色", "圆", "形"]


def test_image_backbone_loads_a_local_weights_file(local_text_model, local_backbone):
    weights, state = local_backbone
    model = create_model(_config(str(local_text_model), str(weights)), pretrained=True, for_training=False)
    backbone = model.image_encoder.backbone.state_dict()
    assert torch.equal(backbone["conv_stem.weight"], state["conv_stem.weight"])
    assert torch.equal(backbone["blocks.3.0.conv_pw.weight"], state["blocks.3.0.conv_pw.weight"])


def test_an_unreachable_text_model_names_itself_and_the_way_out(monkeypatch, local_backbone):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    weights, _ = local_backbone
    with pytest.raises(UsageError, match=r"'hfl/chinese-roberta-wwm-ext'.*local directory"):
        create_model(_config("hfl/chinese-roberta-wwm-ext", str(weights)), pretrained=True)
    with pytest.raises(UsageError, match=r"tokenizer of 'hfl/chinese-roberta-wwm-ext'.*local directory"):
        load_pretrained_tokenizer("hfl/chinese-roberta-wwm-ext")


def test_an_unreachable_image_backbone_names_itself_and_the_way_out(monkeypatch, local_text_model):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match=r"image backbone 'tf_efficientnet_b0.ns_jft_in1k'.*local file"):
        create_model(_config(str(local_text_model), "tf_efficientnet_b0.ns_jft_in1k"), pretrained=True)
