"""Caption images (records with optional boxes) and score captions of a dataset split.

`caption_records` is the one path from images to captions: `wenlan finetune-caption`'s
validation and `wenlan caption` both use it with the same batch size and decoding
options, so they report the same scores on the same split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from wenlan_cli.plugin_api import DataError, ImageCollator, ImageDataset, ImageSettings, ImageTextRecord, normalize_images

from .config import EVAL_BATCH_SIZE
from .decoding import DecodeOptions, _banned_tokens, decode, detokenize

# Scored in place of a caption that is empty after the protocol's clean-up (the official
# scorer refuses empty captions); counted in the result's warnings.
EMPTY_PLACEHOLDER = "空"


@dataclass
class CaptionOutput:
    captions: dict[str, str]  # image id -> caption, in record order
    failures: list[tuple[int, str]] = field(default_factory=list)  # (record index, message)


def image_loader(records: Sequence[ImageTextRecord], settings: ImageSettings, batch_size: int, workers: int = 0, device=None) -> DataLoader:
    """Batches of (uint8 pixels, boxes, box mask, record indices, failures) in record order."""
    return DataLoader(
        ImageDataset(records, settings),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=ImageCollator(settings.max_regions),
        pin_memory=device is not None and torch.device(device).type == "cuda",
    )


@torch.no_grad()
def caption_records(
    model,
    tokenizer,
    records: Sequence[ImageTextRecord],
    settings: ImageSettings,
    *,
    device: torch.device,
    options: DecodeOptions,
    batch_size: int = EVAL_BATCH_SIZE,
    workers: int = 0,
    skip_bad: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> CaptionOutput:
    """One caption per record (keyed by `image_id`). An unreadable image raises DataError
    naming it, unless `skip_bad` leaves it out (listed in `failures`)."""
    options.validate()
    was_training = model.training
    model.eval()
    banned = _banned_tokens(model.head.config, tokenizer)
    captions: dict[str, str] = {}
    failures: list[tuple[int, str]] = []
    try:
        for pixels, boxes, box_mask, indices, bad in image_loader(records, settings, batch_size, workers, device):
            if bad and not skip_bad:
                raise DataError(f"{bad[0][1]} (pass --skip-bad to leave unreadable images out)")
            failures.extend(bad)
            if pixels is not None:
                images = normalize_images(pixels.to(device), settings.mean, settings.std)
                box_mask = box_mask.to(device)
                memory = model.encode(images, boxes.to(device), box_mask)
                for index, ids in zip(indices, decode(model.head, memory, box_mask, options, banned)):
                    captions[records[index].image_id] = detokenize(tokenizer, ids)
            if on_batch is not None:
                on_batch(len(indices) + len(bad))
    finally:
        model.train(was_training)
    ordered = {r.image_id: captions[r.image_id] for r in records if r.image_id in captions}
    return CaptionOutput(ordered, failures)


def score_split(
    captions: dict[str, str],
    records: Sequence[ImageTextRecord],
    *,
    meteor: bool = True,
    workers: int | None = None,
) -> dict:
    """The official AIC-ICC scores of `captions` against the records' references.

    Captions that the protocol's clean-up leaves empty are scored as `EMPTY_PLACEHOLDER`
    (with a warning), so that an early, half-trained model can still be scored."""
    from .scoring import score_captions

    references = {r.image_id: list(r.captions) for r in records}
    predictions = {}
    empty = []
    for image_id in references:
        caption = captions.get(image_id, "")
        if not caption.strip().replace("。", "").strip():
            empty.append(image_id)
            caption = EMPTY_PLACEHOLDER
        predictions[image_id] = caption
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = score_captions(predictions, references, meteor=meteor, workers=workers)
    if empty:
        shown = ", ".join(repr(i) for i in empty[:3]) + (", ..." if len(empty) > 3 else "")
        result["warnings"] = [
            f"{len(empty)} empty caption(s) scored as {EMPTY_PLACEHOLDER!r} ({shown})",
            *result["warnings"],
        ]
    return result
