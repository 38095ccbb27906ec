"""`wenlan convert brivl`: the released BriVL-1.0 checkpoint layout into wenlan.

There is no released file here, so this test carries its own small reimplementation of the
released module layout (written from the layout described in wenlan_cli/convert/brivl.py and
the key names of `torch.load(...)['learnable']`): a timm backbone with its classifier, BriVL's
per-image affine-grid region sampling + 1x1 conv + average, a sequence-first Transformer
and a two-layer MLP; BERT run on padded ids without an attention mask. Its random weights
and embeddings are the reference the converted wenlan model must reproduce.
"""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import wenlan_cli
from wenlan_cli.cli import main
from wenlan_cli.config import to_dict
from wenlan_cli.errors import CheckpointError
from wenlan_cli.models.registry import get_model_config
from wenlan_cli.models.tokenizer import build_char_vocab, tokenizer_from_vocab

IMG, GRID, MAX_REGIONS, MAX_LEN = 64, 4, 6, 16


class ReleasedMLP(nn.Module):
    def __init__(self, d_in, d_hidden, d_out):
        super().__init__()
        self.fc1, self.relu, self.fc2 = nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_out)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x)))


class ReleasedImageEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = timm.create_model("test_efficientnet")  # classifier included, as released
        c = self.backbone.num_features
        self.learnable = nn.ModuleDict()
        self.learnable["imgFC"] = ReleasedMLP(c, c, c)
        layer = nn.TransformerEncoderLayer(d_model=c, nhead=4, dim_feedforward=64)
        self.learnable["imgAtt"] = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.learnable["max_pool"] = nn.Sequential(nn.Conv2d(c, c, kernel_size=1), nn.AvgPool2d(GRID, stride=1))

    def pool(self, fmap, rois):
        h, w = fmap.shape[2:]
        ratio = IMG / h
        out = []
        for b in range(fmap.shape[0]):
            x1, y1, x2, y2 = (rois[b, :, i] / ratio for i in range(4))
            zero = torch.zeros_like(x1)
            theta = torch.stack([(x2 - x1) / (w - 1), zero, (x1 + x2 - w + 1) / (w - 1),
                                 zero, (y2 - y1) / (h - 1), (y1 + y2 - h + 1) / (h - 1)], dim=1).view(-1, 2, 3)
            grid = F.affine_grid(theta, [rois.shape[1], fmap.shape[1], GRID, GRID], align_corners=False)
            sampled = F.grid_sample(fmap[b : b + 1].expand(rois.shape[1], -1, -1, -1), grid, align_corners=False)
            out.append(self.learnable["max_pool"](sampled).flatten(1))
        return torch.stack(out)

    def forward(self, images, mask, rois):
        x = F.normalize(self.pool(self.backbone.forward_features(images), rois), dim=-1)
        x = self.learnable["imgAtt"](x.transpose(0, 1), src_key_padding_mask=(mask == 0)).transpose(0, 1)
        m = mask.float().unsqueeze(-1)
        return self.learnable["imgFC"]((x * m).sum(1) / m.sum(1))


class ReleasedTextEncoder(nn.Module):
    def __init__(self, vocab_size, embed_dim):
        super().__init__()
        from transformers import BertConfig, BertModel

        self.backbone = nn.Module()
        self.backbone.bert = BertModel(BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                                                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
        self.learnable = nn.ModuleDict()
        self.learnable["textFC"] = ReleasedMLP(32, embed_dim, embed_dim)
        layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64)
        self.learnable["textAtt"] = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)

    def forward(self, ids, mask):
        x = F.normalize(self.backbone.bert(ids).last_hidden_state, dim=-1)
        x = self.learnable["textAtt"](x.transpose(0, 1), src_key_padding_mask=(mask == 0)).transpose(0, 1)
        m = mask.float().unsqueeze(-1)
        return self.learnable["textFC"]((x * m).sum(1) / m.sum(1))


class ReleasedModel(nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.learnable = nn.ModuleDict()
        self.learnable["imgencoder"] = ReleasedImageEncoder()
        self.learnable["imgencoder_mom"] = ReleasedImageEncoder()
        embed = self.learnable["imgencoder"].backbone.num_features
        self.learnable["textencoder"] = ReleasedTextEncoder(vocab_size, embed)
        self.learnable["textencoder_mom"] = ReleasedTextEncoder(vocab_size, embed)


def wenlan_config(path):
    config = to_dict(get_model_config("brivl-tiny"))
    config.update(name="released-test", embed_dim=256)
    config["image"].update(backbone="test_efficientnet", backbone_kwargs={}, image_size=IMG, region_dim=256, encoder_layers=2,
                           encoder_heads=4, encoder_ff_dim=64, mlp_hidden_dim=256, max_regions=MAX_REGIONS, pool_size=GRID,
                           box_embedding=False, dropout=0.1)
    config["text"].update(bert_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                       "intermediate_size": 64, "max_position_embeddings": 64},
                          encoder_layers=2, encoder_heads=4, encoder_ff_dim=64, mlp_hidden_dim=256, max_length=MAX_LEN, dropout=0.1)
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    tokenizer = tokenizer_from_vocab(build_char_vocab(["一只白色的小狗在草地上奔跑", "两个红色的圆形在左上角"]))
    tokenizer.save_pretrained(root / "tokenizer")
    torch.manual_seed(0)
    model = ReleasedModel(len(tokenizer)).eval()
    torch.save({"learnable": model.learnable.state_dict()}, root / "BriVL-test.pth")
    return root, model, tokenizer


def test_converted_weights_reproduce_the_released_embeddings(released, tmp_path, capsys):
    root, reference, tokenizer = released
    out = tmp_path / "converted"
    code = main(["convert", "brivl", str(root / "BriVL-test.pth"), str(out), "--model", str(wenlan_config(tmp_path / "m.json")),
                 "--tokenizer", str(root / "tokenizer"), "--image-size", str(IMG)])
    assert code == 0, capsys.readouterr().err
    model, preprocess, tok = wenlan_cli.load(out)

    torch.manual_seed(1)
    images = torch.randn(3, 3, IMG, IMG)
    detector_boxes = [[[4.0, 6.0, 40.0, 30.0], [20.0, 20.0, 60.0, 62.0]], [[0.0, 0.0, 10.0, 50.0]], []]
    # The released layout: detector boxes, then the whole image, then zero padding.
    rois = torch.zeros(3, MAX_REGIONS, 4)
    mask = torch.zeros(3, MAX_REGIONS, dtype=torch.long)
    for i, boxes in enumerate(detector_boxes):
        rows = boxes + [[0.0, 0.0, IMG, IMG]]
        rois[i, : len(rows)] = torch.tensor(rows)
        mask[i, : len(rows)] = 1
    with torch.no_grad():
        expected = F.normalize(reference.learnable["imgencoder"](images, mask, rois), dim=-1)
    got = model.encode_image(images, boxes=detector_boxes, original_sizes=[(IMG, IMG)] * 3)
    assert (got - expected).abs().max().item() <= 1e-5

    texts = ["一只白色的小狗在草地上奔跑", "红色的圆形"]
    batch = tokenizer(texts, padding="max_length", max_length=MAX_LEN, truncation=True, return_tensors="pt")
    with torch.no_grad():
        expected_text = F.normalize(reference.learnable["textencoder"](batch["input_ids"], batch["attention_mask"]), dim=-1)
    got_text = model.encode_text(texts)  # padded to the longest text only: BriVL padding is restored inside
    assert (got_text - expected_text).abs().max().item() <= 1e-5
    info = json.loads((out / "config.json").read_text())
    assert info["model"]["image"]["region_pooling"] == "grid" and info["model"]["text"]["language_model_sees_padding"]
    assert info["ignored_keys"] > 0  # momentum towers, classifier, pooler


def test_unknown_and_missing_keys_are_listed(released, tmp_path):
    from wenlan_cli.convert import convert_brivl

    root, reference, _ = released
    state = {k: v.clone() for k, v in reference.learnable.state_dict().items()}
    state["imgencoder.learnable.extra_head.weight"] = torch.zeros(2)
    torch.save({"learnable": state}, tmp_path / "extra.pth")
    config = wenlan_config(tmp_path / "m.json")
    with pytest.raises(CheckpointError, match=r"not part of the released BriVL layout: imgencoder\.learnable\.extra_head\.weight"):
        convert_brivl(tmp_path / "extra.pth", tmp_path / "out1", model=str(config), tokenizer=str(root / "tokenizer"))
    state = {k: v for k, v in reference.learnable.state_dict().items() if "imgFC.fc2" not in k}
    torch.save({"learnable": state}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing 2 \(e\.g\. image_encoder\.head\.mlp\.2\.bias"):
        convert_brivl(tmp_path / "missing.pth", tmp_path / "out2", model=str(config), tokenizer=str(root / "tokenizer"))


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    from wenlan_cli.convert.brivl import read_released_state

    (tmp_path / "x.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_released_state(tmp_path / "x.pth")
    torch.save({"something": [1, 2]}, tmp_path / "y.pth")
    with pytest.raises(CheckpointError, match="no state dict under 'learnable'"):
        read_released_state(tmp_path / "y.pth")
