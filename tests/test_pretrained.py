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


# --------------------------------------------------------------------------- image mean/std


def _image(backbone="test_resnet", mean=None, std=None, source=None):
    config = get_model_config("brivl-tiny")
    image = dataclasses.replace(config.image, backbone=backbone, mean=mean, std=std, pretrained_source=source)
    return dataclasses.replace(config, image=image)


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_bundled_configs_state_their_backbones_own_mean_and_std():
    from wenlan_cli.models import list_models
    from wenlan_cli.models.normalization import backbone_mean_std

    for name in list_models():
        image = get_model_config(name).image
        own = backbone_mean_std(image, pretrained=True)
        assert own is not None, name
        assert image.mean == pytest.approx(own[0]) and image.std == pytest.approx(own[1]), name


def test_mean_and_std_left_out_come_from_timms_pretrained_config():
    from wenlan_cli.models.normalization import resolve_image_normalization

    for pretrained in (True, False):  # test_resnet's timm config says 0.5, not ImageNet's values
        resolved = resolve_image_normalization(_image(), pretrained=pretrained).image
        assert (resolved.mean, resolved.std) == HALF
    # The weights named by pretrained_source (a timm name) decide, not the architecture's default tag.
    resolved = resolve_image_normalization(_image("tf_efficientnet_b5", source="tf_efficientnet_b5.ap_in1k"), pretrained=True)
    assert (resolved.image.mean, resolved.image.std) == HALF
    resolved = resolve_image_normalization(_image("tf_efficientnet_b5", source="tf_efficientnet_b5.ap_in1k"), pretrained=False)
    assert (resolved.image.mean, resolved.image.std) == IMAGENET  # no weights loaded: the backbone's own config


def test_stated_mean_and_std_that_disagree_with_the_pretrained_weights_are_refused():
    from wenlan_cli.models.normalization import resolve_image_normalization

    stated = _image(mean=IMAGENET[0], std=IMAGENET[1])  # a copied config whose backbone was swapped
    with pytest.raises(UsageError) as err:
        resolve_image_normalization(stated, pretrained=True)
    message = str(err.value)
    assert message == (
        "the model config's image.mean [0.485, 0.456, 0.406] and image.std [0.229, 0.224, 0.225] differ from what the "
        "pretrained weights of 'test_resnet' were trained with (mean [0.5, 0.5, 0.5], std [0.5, 0.5, 0.5], timm's "
        "pretrained config); remove them from the model config to use the weights' own, or pass "
        "--image-norm-from-config to keep the config's."
    )
    kept = resolve_image_normalization(stated, pretrained=True, keep_config=True).image
    assert (kept.mean, kept.std) == IMAGENET
    scratch = resolve_image_normalization(stated, pretrained=False).image  # no weights to disagree with
    assert (scratch.mean, scratch.std) == IMAGENET
    # One field stated (and wrong), the other left to timm: only the stated one is named.
    with pytest.raises(UsageError, match=r"^the model config's image.std \[0.229, 0.224, 0.225\] differs .*remove it"):
        resolve_image_normalization(_image(std=IMAGENET[1]), pretrained=True)
    close = resolve_image_normalization(_image(mean=(0.5004, 0.5, 0.4996)), pretrained=True).image
    assert close.mean == (0.5004, 0.5, 0.4996) and close.std == HALF[1]  # rounding is not a mismatch


def test_mean_and_std_timm_cannot_supply_must_be_stated():
    from wenlan_cli.models.normalization import resolve_image_normalization

    with pytest.raises(UsageError, match=r"^image.mean and image.std are not set in the model config and timm has no "
                                         r"pretrained config for 'no_such_backbone'"):
        resolve_image_normalization(_image("no_such_backbone"), pretrained=False)
    stated = resolve_image_normalization(_image("no_such_backbone", *HALF), pretrained=False).image
    assert (stated.mean, stated.std) == HALF
    with pytest.raises(UsageError, match=r"image.std \[0.5, 0, 0.5\] must be positive"):
        resolve_image_normalization(_image(mean=HALF[0], std=(0.5, 0.0, 0.5)), pretrained=False)


@pytest.fixture(scope="module")
def resnet_run_config(tmp_path_factory):
    """brivl-tiny with timm's test_resnet (normalised with 0.5, not ImageNet's values), its
    weights in a local file, and a config without mean/std."""
    import json

    import timm
    from safetensors.torch import save_file

    from wenlan_cli.config import to_dict

    folder = tmp_path_factory.mktemp("resnet")
    torch.manual_seed(3)
    weights = folder / "test_resnet.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("test_resnet").state_dict().items()}, str(weights))
    config = to_dict(get_model_config("brivl-tiny"))
    config["image"].update(backbone="test_resnet", image_size=64)
    del config["image"]["mean"], config["image"]["std"]
    path = folder / "tiny-resnet.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path, weights


def test_pretrain_records_the_pretrained_backbones_mean_and_std(resnet_run_config, local_text_model, synth_dir, tiny_config, tmp_path):
    import json

    import wenlan_cli
    from wenlan_cli.train.loop import Pretrainer

    path, weights = resnet_run_config
    cfg = tiny_config(tmp_path / "run", synth_dir, model=str(path), pretrained=True, image_weights=str(weights),
                      text_weights=str(local_text_model), steps=2, batch_size=4, queue_size=16)
    result = Pretrainer(cfg).run()
    recorded = json.loads((result.checkpoint / "config.json").read_text(encoding="utf-8"))["model"]["image"]
    assert (recorded["mean"], recorded["std"]) == ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    _, preprocess, _ = wenlan_cli.load(result.checkpoint)
    assert (preprocess.settings.mean, preprocess.settings.std) == HALF


def test_pretrain_refuses_a_mismatch_in_one_sentence_unless_told(resnet_run_config, local_text_model, synth_dir, tmp_path, capsys):
    import json

    from wenlan_cli.cli import main

    path, weights = resnet_run_config
    config = json.loads(path.read_text(encoding="utf-8"))
    config["image"].update(mean=list(IMAGENET[0]), std=list(IMAGENET[1]))
    stated = tmp_path / "stated.json"
    stated.write_text(json.dumps(config), encoding="utf-8")
    args = ["pretrain", "--model", str(stated), "--pretrained", "--image-weights", str(weights), "--text-weights",
            str(local_text_model), "--data-dir", str(synth_dir), "--out", str(tmp_path / "run"), "--steps", "1"]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and "image.mean [0.485, 0.456, 0.406] and image.std" in err and "--image-norm-from-config" in err
    assert "Traceback" not in err and not list((tmp_path / "run").glob("**/model.safetensors"))
