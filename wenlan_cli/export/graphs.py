"""The two towers as ONNX graphs, traced by torch.onnx's dynamo-based exporter.

Each graph starts where preprocessing ends (normalised pixels and boxes; token ids and
mask) and ends with the L2-normalised vector, so everything the model computes — the
backbone, region pooling (torchvision's roi_align, or BriVL's affine-grid sampling for
converted weights), the Transformers and the MLPs — is inside the graph. The batch
dimension is dynamic; so is the text length, except for a converted BriVL whose BERT
sees the padding, which takes texts padded to max_length.

The exporter is the dynamo-based one (`torch.export` + onnxscript; `dynamo=True`, the
default of torch.onnx.export in torch 2.14): it translates torchvision's roi_align,
grid_sample / affine_grid and the Hugging Face BERT with dynamic shapes as they are.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import ExportError

OPSET = 20


class ImageGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, boxes: torch.Tensor, box_mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images, boxes, box_mask)


class TextGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(input_ids, attention_mask)


def example_image_inputs(config, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs of the right shapes and plausible values: boxes inside the image, some
    padding boxes masked out."""
    size, regions = config.image.image_size, config.image.max_regions
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=generator)
    corner = torch.rand(batch, regions, 2, generator=generator) * size / 2
    boxes = torch.cat([corner, corner + size / 2], dim=-1)
    mask = torch.ones(batch, regions, dtype=torch.bool)
    mask[0, max(1, regions // 2) :] = False
    return images, boxes, mask


def example_text_inputs(config, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    length = config.text.max_length if config.text.language_model_sees_padding else min(8, config.text.max_length)
    input_ids = torch.randint(5, 20, (batch, length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length // 2 :] = 0
    return input_ids, mask


@contextlib.contextmanager
def _quiet():
    """The exporter narrates its steps on stdout and warns about renamed axes; a command
    prints its own summary instead."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str], dynamic_shapes: dict) -> None:
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(
                module.eval(), args, str(path), input_names=input_names, output_names=["embeddings"],
                dynamic_shapes=dynamic_shapes, dynamo=True, opset_version=OPSET, external_data=False,
            )
    except ImportError as exc:
        raise ExportError(f"exporting to ONNX needs onnx and onnxscript ({exc}); pip install 'wenlan[onnx]'.") from None
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"torch.onnx could not export the {path.stem} tower ({type(exc).__name__}: {first}).") from None


def export_towers(model: nn.Module, config, directory: Path, image_file: str, text_file: str) -> None:
    """Write the image and the text tower of `model` (in eval mode, on the CPU) as ONNX."""
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    names = ["images", "boxes", "box_mask"]
    _export(ImageGraph(model), example_image_inputs(config), directory / image_file, names,
            {name: {0: batch} for name in names})
    text_shapes = {0: batch}
    if not config.text.language_model_sees_padding:
        text_shapes[1] = torch.export.Dim("length", min=2, max=config.text.max_length)
    _export(TextGraph(model), example_text_inputs(config), directory / text_file, ["input_ids", "attention_mask"],
            {"input_ids": text_shapes, "attention_mask": dict(text_shapes)})
