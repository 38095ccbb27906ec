"""BriVL's image tower: a timm CNN, region features pooled over boxes, a Transformer, an MLP."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from ..config import ImageTowerConfig
from ..errors import UsageError
from .layers import SequenceHead, train_only_top
from .normalization import weights_name


def create_backbone(config: ImageTowerConfig, pretrained: bool = False) -> nn.Module:
    """A timm model without classifier or pooling, so `forward_features` keeps the map."""
    import timm

    kwargs = dict(num_classes=0, global_pool="", **config.backbone_kwargs)
    source = config.pretrained_source
    if pretrained and source and Path(source).exists():
        # A local weights file (safetensors or a timm/PyTorch checkpoint).
        kwargs["pretrained_cfg_overlay"] = {**kwargs.get("pretrained_cfg_overlay", {}), "file": str(source)}
    name = weights_name(config, pretrained)
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise UsageError(f"image backbone {name!r} is not a timm model name.") from None
        raise
    except (OSError, ValueError) as exc:
        if not pretrained:
            raise
        raise UsageError(
            f"could not load pretrained weights for image backbone {name!r} ({type(exc).__name__}); "
            "without network access, download them elsewhere and set image.pretrained_source "
            "(or --image-weights) to the local file."
        ) from None


def backbone_blocks(backbone: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """The backbone's stacked blocks (bottom to top) and the modules after them."""
    children = list(backbone.named_children())
    for attr in ("blocks", "stages", "layers"):
        container = getattr(backbone, attr, None)
        if isinstance(container, (nn.Sequential, nn.ModuleList)):
            names = [n for n, _ in children]
            after = [m for _, m in children[names.index(attr) + 1 :]]
            return list(container), after
    layer_names = [n for n, _ in children if n.startswith("layer") and n[5:].isdigit()]
    if layer_names:
        last = max(i for i, (n, _) in enumerate(children) if n in layer_names)
        return [getattr(backbone, n) for n in layer_names], [m for _, m in children[last + 1 :]]
    raise UsageError(
        f"image.trainable_blocks is set but backbone {type(backbone).__name__} has no blocks, "
        "stages or layerN children to choose from."
    )


class ImageEncoder(nn.Module):
    """Images + boxes -> one vector per image in the joint space (not yet normalised).

    `boxes` is (B, R, 4) in pixels of the network input, `box_mask` (B, R) marks real
    boxes; position 0 is the whole-image box. Padding boxes are pooled too (a static
    shape is cheaper than ragged indexing) and masked out afterwards.
    """

    def __init__(self, config: ImageTowerConfig, embed_dim: int, pretrained: bool = False) -> None:
        super().__init__()
        self.config = config
        self.backbone = create_backbone(config, pretrained=pretrained)
        channels = self.backbone.num_features
        self.region_proj = nn.Linear(channels, config.region_dim)
        self.box_embed = nn.Linear(5, config.region_dim) if config.box_embedding else None
        self.head = SequenceHead(
            config.region_dim,
            embed_dim,
            layers=config.encoder_layers,
            heads=config.encoder_heads,
            ff_dim=config.encoder_ff_dim,
            mlp_hidden_dim=config.mlp_hidden_dim,
            dropout=config.dropout,
        )
        if config.trainable_blocks is not None:
            blocks, after = backbone_blocks(self.backbone)
            train_only_top(self.backbone, blocks, config.trainable_blocks, after)

    def pool_regions(self, features: torch.Tensor, boxes: torch.Tensor, image_size: int) -> torch.Tensor:
        """(B, C, h, w) map + (B, R, 4) boxes -> (B, R, C): the mean of a pool x pool grid of
        bilinear samples inside each box."""
        if self.config.region_pooling == "grid":
            return grid_pool(features, boxes, image_size, self.config.pool_size)
        return self.roi_align_pool(features, boxes, image_size)

    def roi_align_pool(self, features: torch.Tensor, boxes: torch.Tensor, image_size: int) -> torch.Tensor:
        """torchvision's roi_align with one bin of pool x pool samples per box."""
        b, r, _ = boxes.shape
        index = torch.arange(b, device=boxes.device, dtype=boxes.dtype).repeat_interleave(r)
        rois = torch.cat([index[:, None], boxes.reshape(b * r, 4)], dim=1)
        pooled = roi_align(
            features,
            rois.to(features.dtype),
            output_size=(1, 1),
            spatial_scale=features.shape[-1] / image_size,
            sampling_ratio=self.config.pool_size,
            aligned=True,
        )
        return pooled.reshape(b, r, -1)

    def regions(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """One raw vector per box (B, R, region_dim), before the Transformer."""
        features = self.backbone.forward_features(images)
        regions = self.region_proj(self.pool_regions(features, boxes, images.shape[-1]))
        if self.box_embed is not None:
            regions = regions + self.box_embed(box_geometry(boxes, images.shape[-1]).to(regions.dtype))
        return regions

    def region_sequence(self, images: torch.Tensor, boxes: torch.Tensor, box_mask: torch.Tensor) -> torch.Tensor:
        """The contextualised region sequence (B, R, region_dim) before pooling, which a
        captioning decoder attends to."""
        return self.head.encode_sequence(self.regions(images, boxes), box_mask)

    def forward(self, images: torch.Tensor, boxes: torch.Tensor, box_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.regions(images, boxes), box_mask)


def grid_pool(features: torch.Tensor, boxes: torch.Tensor, image_size: int, grid: int) -> torch.Tensor:
    """BriVL's own region pooling, for its released weights: each box (in input pixels) is
    mapped to feature-map units and sampled on a grid x grid lattice by an affine grid whose
    scale and offset are normalised by (size - 1) while `grid_sample` itself uses the
    align_corners=False convention — the exact sampling positions of the released model.
    All boxes of all images are sampled in one `grid_sample` call; the mean over the
    lattice comes before the 1x1 projection, which is the same linear map."""
    b, r, _ = boxes.shape
    _, c, h, w = features.shape
    scale_x = image_size / w
    scale_y = image_size / h
    x1, y1, x2, y2 = (boxes[..., i] for i in range(4))
    x1, x2 = x1 / scale_x, x2 / scale_x
    y1, y2 = y1 / scale_y, y2 / scale_y
    theta = torch.zeros(b * r, 2, 3, dtype=features.dtype, device=features.device)
    theta[:, 0, 0] = ((x2 - x1) / (w - 1)).reshape(-1)
    theta[:, 0, 2] = ((x1 + x2 - w + 1) / (w - 1)).reshape(-1)
    theta[:, 1, 1] = ((y2 - y1) / (h - 1)).reshape(-1)
    theta[:, 1, 2] = ((y1 + y2 - h + 1) / (h - 1)).reshape(-1)
    lattice = F.affine_grid(theta, [b * r, c, grid, grid], align_corners=False)  # (B*R, g, g, 2)
    lattice = lattice.reshape(b, r * grid, grid, 2)
    sampled = F.grid_sample(features, lattice, mode="bilinear", padding_mode="zeros", align_corners=False)
    return sampled.reshape(b, c, r, grid * grid).mean(dim=-1).transpose(1, 2)


def box_geometry(boxes: torch.Tensor, image_size: int) -> torch.Tensor:
    """(…, 4) pixel boxes -> (…, 5): corners in [0, 1] and relative area."""
    unit = boxes / image_size
    area = (unit[..., 2] - unit[..., 0]) * (unit[..., 3] - unit[..., 1])
    return torch.cat([unit, area.unsqueeze(-1)], dim=-1)
