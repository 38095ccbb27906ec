"""The embedded default dataset: compositional Chinese image-caption pairs.

Each image holds one or two groups of objects; a group has a position, a count, a size,
a colour and a shape. Half of the scenes are followed by a near-twin that differs in one
attribute (most often the shape), so captions need every attribute, shapes included.
Five captions per image describe the groups with varied wording and order, and every
object's exact box is stored as `bbox`. Within a split no two
images share all their attributes, so telling captions apart needs the image. The
files follow the AIC-ICC release layout, so the AIC-ICC reader reads them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from .aic_icc import AIC_SPLITS

COLOURS = {
    "红色": (215, 35, 35),
    "绿色": (40, 160, 60),
    "蓝色": (35, 75, 215),
    "黄色": (235, 200, 25),
    "紫色": (135, 55, 180),
    "橙色": (245, 125, 25),
    "黑色": (25, 25, 25),
    "粉色": (245, 135, 185),
    "青色": (25, 185, 195),
}
COLOUR_SHORT = {name: name[0] for name in COLOURS}
SHAPES = {
    "圆形": ["圆形", "圆"],
    "正方形": ["正方形", "正方块"],
    "三角形": ["三角形", "三角"],
    "星形": ["星形", "星星"],
    "菱形": ["菱形", "菱形块"],
    "十字形": ["十字形", "十字"],
}
SIZES = {"大": ["大", "大的", "较大的"], "小": ["小", "小的", "较小的"]}
# Diameter range in pixels at the reference canvas of 128 px.
SIZE_PIXELS = {"大": (21, 25), "小": (13, 16)}
POSITIONS = {
    "左上": ["左上角", "左上方", "画面左上"],
    "右上": ["右上角", "右上方", "画面右上"],
    "左下": ["左下角", "左下方", "画面左下"],
    "右下": ["右下角", "右下方", "画面右下"],
    "中间": ["中间", "正中间", "画面中央"],
}
# Region of each position as fractions of the canvas: x1, y1, x2, y2.
POSITION_REGIONS = {
    "左上": (0.02, 0.02, 0.48, 0.48),
    "右上": (0.52, 0.02, 0.98, 0.48),
    "左下": (0.02, 0.52, 0.48, 0.98),
    "右下": (0.52, 0.52, 0.98, 0.98),
    "中间": (0.26, 0.26, 0.74, 0.74),
}
COUNTS = {1: ["一个", "1个"], 2: ["两个", "2个"], 3: ["三个", "3个"]}
OPENERS = ["", "", "", "图中", "这张图片里", "图片上"]


@dataclass(frozen=True)
class Group:
    position: str
    count: int
    size: str
    colour: str
    shape: str


def sample_scene(rng: random.Random) -> tuple[Group, ...]:
    """One or two groups; two groups sit in two different corners."""
    def group(position: str) -> Group:
        return Group(
            position=position,
            count=rng.choice(list(COUNTS)),
            size=rng.choice(list(SIZES)),
            colour=rng.choice(list(COLOURS)),
            shape=rng.choice(list(SHAPES)),
        )

    if rng.random() < 0.3:
        return (group(rng.choice(list(POSITIONS))),)
    first, second = rng.sample(["左上", "右上", "左下", "右下"], 2)
    return tuple(sorted((group(first), group(second)), key=lambda g: list(POSITIONS).index(g.position)))


def describe_group(group: Group, rng: random.Random) -> str:
    pos = rng.choice(POSITIONS[group.position])
    count = rng.choice(COUNTS[group.count])
    size = rng.choice(SIZES[group.size])
    colour = group.colour if rng.random() < 0.7 else COLOUR_SHORT[group.colour] + "色"
    shape = rng.choice(SHAPES[group.shape])
    templates = [
        f"{pos}有{count}{size}{colour}{shape}",
        f"{pos}是{count}{colour}的{size}{shape}",
        f"{count}{size}{colour}{shape}在{pos}",
        f"{count}{colour}{shape}位于{pos}，{'它' if group.count == 1 else '它们'}{'很' if rng.random() < 0.5 else '比较'}{group.size}",
        f"在{pos}可以看到{count}{size}{colour}{shape}",
    ]
    return rng.choice(templates)


def describe_scene(scene: tuple[Group, ...], rng: random.Random) -> str:
    groups = list(scene)
    rng.shuffle(groups)
    parts = [describe_group(g, rng) for g in groups]
    joiner = rng.choice(["，", "，", "；", "，而"])
    opener = rng.choice(OPENERS)
    text = joiner.join(parts)
    if opener:
        text = opener + text.replace("画面", "")
    return text + "。"


def _shape_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    import math

    if shape == "三角形":
        return [(cx, cy - r), (cx + r * 0.93, cy + r * 0.75), (cx - r * 0.93, cy + r * 0.75)]
    if shape == "菱形":
        return [(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)]
    if shape == "星形":
        pts = []
        for i in range(10):
            radius = r if i % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return pts
    if shape == "十字形":
        w = r * 0.38
        return [
            (cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w),
            (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w),
            (cx - r, cy - w), (cx - w, cy - w),
        ]
    return None


def draw_object(draw: ImageDraw.ImageDraw, shape: str, colour: tuple[int, int, int], cx: float, cy: float, r: float) -> list[float]:
    """Draw one object and return its exact box."""
    points = _shape_points(shape, cx, cy, r)
    if shape == "圆形":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        return [cx - r, cy - r, cx + r, cy + r]
    if shape == "正方形":
        s = r * 0.85
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=colour)
        return [cx - s, cy - s, cx + s, cy + s]
    draw.polygon(points, fill=colour)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return [min(xs), min(ys), max(xs), max(ys)]


def render_scene(scene: tuple[Group, ...], rng: random.Random, size: int = 128, supersample: int = 2) -> tuple[Image.Image, list[list[float]]]:
    """Draw the scene on a lightly tinted background; boxes in pixels of the output."""
    big = size * supersample
    base = rng.randint(225, 250)
    background = tuple(min(255, base + rng.randint(-8, 8)) for _ in range(3))
    image = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(image)
    boxes: list[list[float]] = []
    scale = big / 128
    for group in scene:
        region = tuple(v * big for v in POSITION_REGIONS[group.position])
        low, high = (v * scale / 2 for v in SIZE_PIXELS[group.size])
        for obj in _layout(group.count, region, low, high, 2 * scale, rng):
            box = draw_object(draw, group.shape, COLOURS[group.colour], *obj)
            boxes.append([round(v / supersample, 2) for v in box])
    if supersample > 1:
        image = image.resize((size, size), Image.LANCZOS)
    return image, boxes


def _layout(count: int, region, low: float, high: float, gap: float, rng: random.Random) -> list[tuple[float, float, float]]:
    """`count` non-overlapping circles (cx, cy, r) inside `region`, radii in [low, high];
    whole layouts are retried, shrinking the radii if a layout keeps failing."""
    x1, y1, x2, y2 = region
    for attempt in range(400):
        shrink = 0.97 ** (attempt // 40)
        objects = []
        for _ in range(count):
            r = rng.uniform(low, high) * shrink
            cx, cy = rng.uniform(x1 + r, x2 - r), rng.uniform(y1 + r, y2 - r)
            if any((cx - px) ** 2 + (cy - py) ** 2 <= (r + pr + gap) ** 2 for px, py, pr in objects):
                break
            objects.append((cx, cy, r))
        if len(objects) == count:
            return objects
    raise RuntimeError("could not lay out the objects without overlap")


def _scene_key(scene: tuple[Group, ...]) -> tuple:
    return tuple(sorted((g.position, g.count, g.size, g.colour, g.shape) for g in scene))


# When a scene gets a near-twin, which attribute of one group the twin changes. Shape is
# the hardest to see, so twins differ most often by shape: without them, colour, position
# and count tell most scenes apart and a model can rank well while ignoring shapes.
TWIN_CHANGES = ["shape"] * 5 + ["colour", "count", "size", "position"] * 1
TWIN_RATE = 0.5


def near_twin(scene: tuple[Group, ...], rng: random.Random) -> tuple[Group, ...]:
    """The scene with one attribute of one group changed."""
    groups = list(scene)
    index = rng.randrange(len(groups))
    group = groups[index]
    change = rng.choice(TWIN_CHANGES)
    if change == "position":
        taken = {g.position for g in groups}
        free = [p for p in (POSITIONS if len(groups) == 1 else ["左上", "右上", "左下", "右下"]) if p not in taken]
        groups[index] = dataclasses.replace(group, position=rng.choice(free))
    else:
        options = {"shape": SHAPES, "colour": COLOURS, "count": COUNTS, "size": SIZES}[change]
        current = getattr(group, change)
        groups[index] = dataclasses.replace(group, **{change: rng.choice([v for v in options if v != current])})
    return tuple(sorted(groups, key=lambda g: list(POSITIONS).index(g.position)))


def scene_stream(rng: random.Random):
    """Random scenes; after each, with probability TWIN_RATE, a near-twin of it."""
    while True:
        scene = sample_scene(rng)
        yield scene
        if rng.random() < TWIN_RATE:
            yield near_twin(scene, rng)


def generate_split(count: int, rng: random.Random, taken: set | None = None) -> list[tuple[Group, ...]]:
    """`count` scenes, no two with the same attributes (nor any in `taken`)."""
    seen = set(taken or ())
    scenes = []
    for scene in scene_stream(rng):
        if len(scenes) == count:
            break
        key = _scene_key(scene)
        if key in seen:
            continue
        seen.add(key)
        scenes.append(scene)
    return scenes


def write_synthetic_dataset(
    out_dir: str | Path,
    *,
    train: int = 10000,
    val: int = 1000,
    test: int = 1000,
    seed: int = 0,
    image_size: int = 128,
    captions_per_image: int = 5,
    progress=None,
) -> Path:
    """Write the dataset in the AIC-ICC release layout under `out_dir` (deterministic by
    seed). Val and test scenes are unique within their split and never seen in train."""
    out_dir = Path(out_dir)
    rng = random.Random(seed)
    val_scenes = generate_split(val, rng)
    test_scenes = generate_split(test, rng, taken={_scene_key(s) for s in val_scenes})
    held_out = {_scene_key(s) for s in val_scenes + test_scenes}
    train_scenes = []
    for scene in scene_stream(rng):
        if len(train_scenes) == train:
            break
        if _scene_key(scene) not in held_out:
            train_scenes.append(scene)
    for split, scenes in (("train", train_scenes), ("val", val_scenes), ("test", test_scenes)):
        if not scenes:
            continue
        layout = AIC_SPLITS[split]
        folder = layout.release
        image_dir = out_dir / folder / layout.images
        image_dir.mkdir(parents=True, exist_ok=True)
        entries = []
        for index, scene in enumerate(scenes):
            item_rng = random.Random(f"{seed}/{split}/{index}")
            image, boxes = render_scene(scene, item_rng, size=image_size)
            name = hashlib.sha1(f"wenlan-synth/{seed}/{split}/{index}".encode()).hexdigest() + ".jpg"
            image.save(image_dir / name, quality=92)
            captions = []
            while len(captions) < captions_per_image:
                caption = describe_scene(scene, item_rng)
                if caption not in captions or len(captions) >= 3 * captions_per_image:
                    captions.append(caption)
            entries.append({"url": f"synthetic://{seed}/{split}/{index}", "image_id": name, "caption": captions, "bbox": boxes})
            if progress is not None:
                progress()
        (out_dir / folder / layout.annotations).write_text(json.dumps(entries, ensure_ascii=False, indent=0), encoding="utf-8")
    return out_dir


def default_cache_dir() -> Path:
    root = os.environ.get("WENLAN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "wenlan"
    )
    return Path(root)


def cached_synthetic_dataset(*, train: int, val: int, test: int, seed: int, image_size: int = 128, progress=None) -> Path:
    """The synthetic dataset for these settings, generated once into the cache (written to a
    temporary folder and renamed, so an interrupted generation is never reused)."""
    key = f"v3-train{train}-val{val}-test{test}-seed{seed}-px{image_size}"
    target = default_cache_dir() / "synth" / key
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    write_synthetic_dataset(tmp, train=train, val=val, test=test, seed=seed, image_size=image_size, progress=progress)
    (tmp / ".complete").write_text("ok\n")
    try:
        tmp.rename(target)
    except OSError:
        # Another process finished first; use its copy.
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def max_unique_scenes() -> int:
    """How many distinct scenes exist (one group anywhere, or two in different corners)."""
    per_group = len(COUNTS) * len(SIZES) * len(COLOURS) * len(SHAPES)
    return len(POSITIONS) * per_group + 6 * per_group * per_group
