"""The image tower's input mean/std: the backbone's own, from timm's pretrained config.

A timm backbone's weights were trained on images normalised with one mean and std
(ImageNet's for most, 0.5 for many others, OpenAI's for CLIP towers). Normalised
otherwise, a pretrained backbone still runs but sees shifted inputs and silently gives
worse features. So a model config may leave `image.mean` / `image.std` out, and they
are taken from timm's pretrained config of the backbone (of the weights named by
`image.pretrained_source` when they come from timm under another name); values a config
does state are checked against the weights' own when training starts from them
(`--pretrained`), and a mismatch is refused unless asked for. Either way the values
used are written into the model config, which the checkpoint records.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import ImageTowerConfig, ModelConfig
from ..errors import UsageError

__all__ = ["OVERRIDE_OPTION", "backbone_mean_std", "resolve_image_normalization", "weights_name"]

# The pretrain option that keeps a config's stated mean/std over the pretrained weights'.
OVERRIDE_OPTION = "--image-norm-from-config"
# Stated values this close to the weights' count as the same (configs round to 3 decimals).
_TOLERANCE = 1e-3


def weights_name(image: ImageTowerConfig, pretrained: bool) -> str:
    """The timm name the backbone's weights come from: `image.pretrained_source` when it
    names a timm model (not a local file) and the weights are pretrained, else the backbone."""
    source = image.pretrained_source
    if pretrained and source and not Path(source).exists():
        return source
    return image.backbone


def backbone_mean_std(image: ImageTowerConfig, pretrained: bool) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) of timm's pretrained config for the backbone's weights, with any
    `pretrained_cfg_overlay` of `image.backbone_kwargs` applied; None when timm has no
    config for that name (an unknown model, or an unknown pretrained tag)."""
    import timm
    from timm.data import resolve_data_config

    try:
        cfg = timm.get_pretrained_cfg(weights_name(image, pretrained))
    except RuntimeError:  # timm knows the architecture but not the tag
        return None
    if cfg is None:
        return None
    values = {**cfg.to_dict(), **(image.backbone_kwargs.get("pretrained_cfg_overlay") or {})}
    data = resolve_data_config(pretrained_cfg=values)
    return tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"])


def _same(stated, own) -> bool:
    return len(stated) == len(own) and all(abs(float(a) - b) <= _TOLERANCE for a, b in zip(stated, own))


def _show(values) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in values) + "]"


def resolve_image_normalization(config: ModelConfig, *, pretrained: bool, keep_config: bool = False) -> ModelConfig:
    """`config` with `image.mean` and `image.std` set to the values training will use.

    Left out (None): timm's pretrained config of the backbone's weights. Stated: kept,
    but with `pretrained` they must match the weights' own unless `keep_config` (the
    `--image-norm-from-config` option). Raises UsageError, naming the config field,
    for a mismatch or for values timm cannot supply.
    """
    image = config.image
    stated = {"mean": image.mean, "std": image.std}
    own = backbone_mean_std(image, pretrained)
    name = weights_name(image, pretrained)
    missing = [f"image.{k}" for k, v in stated.items() if v is None]
    if own is None:
        if missing:
            raise UsageError(
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set in the model config and timm "
                f"has no pretrained config for {name!r} to take {'it' if len(missing) == 1 else 'them'} from; "
                "set them to the mean and std the backbone's inputs are normalised with."
            )
        resolved = stated
    else:
        weights = dict(zip(("mean", "std"), own))
        if pretrained and not keep_config:
            differ = [k for k, v in stated.items() if v is not None and not _same(v, weights[k])]
            if differ:
                fields = " and ".join(f"image.{k} {_show(stated[k])}" for k in differ)
                theirs = ", ".join(f"{k} {_show(weights[k])}" for k in differ)
                raise UsageError(
                    f"the model config's {fields} {'differs' if len(differ) == 1 else 'differ'} from what the "
                    f"pretrained weights of {name!r} were trained with ({theirs}, timm's pretrained config); "
                    f"remove {'it' if len(differ) == 1 else 'them'} from the model config to use the weights' own, "
                    f"or pass {OVERRIDE_OPTION} to keep the config's."
                )
        resolved = {k: weights[k] if v is None else v for k, v in stated.items()}
    mean, std = (tuple(float(v) for v in resolved[k]) for k in ("mean", "std"))
    if min(std) <= 0:
        raise UsageError(f"image.std {_show(std)} must be positive in every channel (images are divided by it).")
    return dataclasses.replace(config, image=dataclasses.replace(image, mean=mean, std=std))
