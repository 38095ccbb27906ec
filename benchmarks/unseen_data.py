"""Three generated datasets that share neither drawings nor words with the built-in one.

The built-in data (wenlan_cli/data/synthetic.py) draws groups of coloured shapes and says
"左上角有两个大的红色圆形". These draw other things, name them with other words and
caption them in other styles, so a run on them measures what the defaults do with data
they were never tuned on:

* tiles      - a square tile with a two-colour pattern (checks, dots, stripes, ...),
               described like a product listing ("藏青与米白相间的棋盘格瓷砖，纹样细密");
* clocks     - a clock face at a time of day, in short, clipped phrases ("湖蓝表盘，三点一刻");
* landscapes - a hillside at a time of day with trees, one building, maybe a river and
               birds, narrated ("黄昏时分，山坡上有三棵树，右边是一座宝塔").

Each image's attributes come from a small grammar; every image is drawn with its own
jitter (positions, sizes, noise). Within the validation split no two images share all
their attributes, so matching a caption to its image needs the image. Files follow the
AIC-ICC release layout, so `wenlan pretrain --dataset aic-icc --data-dir DIR` reads them.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw

from wenlan_cli.data.aic_icc import AIC_SPLITS

SIZE = 128

# ----------------------------------------------------------------------------- tiles

TILE_COLOURS = {
    "藏青": (30, 45, 95), "米白": (240, 232, 210), "赭石": (160, 82, 45), "湖蓝": (60, 150, 200),
    "墨绿": (25, 80, 50), "杏黄": (245, 200, 110), "酒红": (120, 25, 45), "银灰": (170, 170, 175),
}
TILE_PATTERNS = ["棋盘格", "波点", "横条纹", "斜纹", "米字花"]
TILE_DENSITY = {"细密": 8, "疏朗": 4}


def _tile_attributes():
    return [(a, b, p, d) for a in TILE_COLOURS for b in TILE_COLOURS if a != b for p in TILE_PATTERNS for d in TILE_DENSITY]


def _draw_tile(rng: random.Random, attributes) -> Image.Image:
    ground, ink, pattern, density = attributes
    image = Image.new("RGB", (SIZE, SIZE), TILE_COLOURS[ground])
    draw = ImageDraw.Draw(image)
    cells = TILE_DENSITY[density] + rng.choice([0, 0, 1])
    step = SIZE / cells
    offset = rng.uniform(0, step / 3)
    colour = TILE_COLOURS[ink]
    for i in range(-1, cells + 1):
        for j in range(-1, cells + 1):
            x, y = i * step + offset, j * step + offset
            if pattern == "棋盘格" and (i + j) % 2 == 0:
                draw.rectangle([x, y, x + step, y + step], fill=colour)
            elif pattern == "波点":
                r = step * rng.uniform(0.22, 0.3)
                draw.ellipse([x + step / 2 - r, y + step / 2 - r, x + step / 2 + r, y + step / 2 + r], fill=colour)
            elif pattern == "米字花":
                w = step * 0.12
                cx, cy = x + step / 2, y + step / 2
                draw.rectangle([cx - step * 0.35, cy - w, cx + step * 0.35, cy + w], fill=colour)
                draw.rectangle([cx - w, cy - step * 0.35, cx + w, cy + step * 0.35], fill=colour)
        if pattern == "横条纹":
            y = i * step + offset
            draw.rectangle([0, y, SIZE, y + step * 0.45], fill=colour)
        elif pattern == "斜纹":
            x = i * step * 2 + offset
            draw.polygon([(x, 0), (x + step * 0.8, 0), (x + step * 0.8 - SIZE, SIZE), (x - SIZE, SIZE)], fill=colour)
    return image


def _tile_captions(rng: random.Random, attributes) -> list[str]:
    ground, ink, pattern, density = attributes
    forms = [
        f"{ink}与{ground}相间的{pattern}瓷砖，纹样{density}",
        f"一块{ground}底{ink}{pattern}的方砖，花纹{density}",
        f"{pattern}图案的瓷砖，底色{ground}，花色{ink}，排布{density}",
        f"这款瓷砖以{ground}为底，饰有{density}的{ink}{pattern}",
        f"{density}的{ink}{pattern}铺满{ground}砖面",
    ]
    rng.shuffle(forms)
    return forms


# ----------------------------------------------------------------------------- clocks

DIAL_COLOURS = {"湖蓝": (70, 160, 215), "象牙": (245, 240, 220), "乌木": (35, 35, 40), "橄榄": (120, 130, 50), "珊瑚": (240, 120, 100), "藕荷": (200, 170, 200)}
HAND_COLOURS = {"鎏金": (220, 170, 40), "银白": (250, 250, 250), "绛红": (140, 20, 30)}
HOURS = ["一", "二", "三", "四", "五", "六", "七", "八", "九", "十", "十一", "十二"]
MINUTES = {0: "整", 15: "一刻", 30: "半", 45: "三刻"}


def _clock_attributes():
    return [(d, h, hour, minute) for d in DIAL_COLOURS for h in HAND_COLOURS for hour in range(12) for minute in MINUTES]


def _draw_clock(rng: random.Random, attributes) -> Image.Image:
    dial, hand, hour, minute = attributes
    background = tuple(rng.randint(200, 255) for _ in range(3)) if dial != "象牙" else (90, 90, 100)
    image = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(image)
    cx, cy = SIZE / 2 + rng.uniform(-6, 6), SIZE / 2 + rng.uniform(-6, 6)
    radius = rng.uniform(44, 54)
    draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=DIAL_COLOURS[dial], outline=(60, 60, 60), width=3)
    for tick in range(12):
        angle = math.radians(tick * 30)
        inner = radius * (0.78 if tick % 3 == 0 else 0.86)
        draw.line([(cx + inner * math.sin(angle), cy - inner * math.cos(angle)),
                   (cx + radius * 0.95 * math.sin(angle), cy - radius * 0.95 * math.cos(angle))], fill=(90, 90, 90), width=2)
    colour = HAND_COLOURS[hand]
    hour_angle = math.radians(((hour + 1) % 12) * 30 + minute * 0.5)
    minute_angle = math.radians(minute * 6)
    draw.line([(cx, cy), (cx + radius * 0.5 * math.sin(hour_angle), cy - radius * 0.5 * math.cos(hour_angle))], fill=colour, width=6)
    draw.line([(cx, cy), (cx + radius * 0.85 * math.sin(minute_angle), cy - radius * 0.85 * math.cos(minute_angle))], fill=colour, width=3)
    draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=colour)
    return image


def _clock_captions(rng: random.Random, attributes) -> list[str]:
    dial, hand, hour, minute = attributes
    time_text = f"{HOURS[hour]}点{MINUTES[minute]}"
    forms = [
        f"{dial}表盘，{time_text}",
        f"{hand}指针，{time_text}，{dial}钟面",
        f"时间：{time_text}。表盘{dial}，指针{hand}",
        f"挂钟显示{time_text}，{hand}指针",
        f"{dial}的钟，指着{time_text}",
    ]
    rng.shuffle(forms)
    return forms


# ----------------------------------------------------------------------------- landscapes

TIMES = {
    "清晨": ((250, 215, 180), (255, 240, 200)),
    "正午": ((120, 185, 240), (255, 250, 210)),
    "黄昏": ((225, 120, 70), (255, 190, 90)),
    "深夜": ((20, 25, 60), (235, 235, 245)),
}
TREE_WORDS = {0: "没有树", 1: "一棵树", 2: "两棵树", 3: "三棵树", 4: "四棵树"}
BUILDINGS = ["小屋", "宝塔", "风车", "灯塔"]
SIDES = {"左边": 0.25, "右边": 0.75}
RIVER = {True: "一条小河流过", False: ""}
BIRDS = {0: "", 1: "一只飞鸟", 2: "两只飞鸟"}


def _landscape_attributes():
    return [(t, n, b, s, r, k) for t in TIMES for n in TREE_WORDS for b in BUILDINGS for s in SIDES for r in (True, False) for k in BIRDS]


def _draw_landscape(rng: random.Random, attributes) -> Image.Image:
    period, trees, building, side, river, birds = attributes
    sky, light = TIMES[period]
    image = Image.new("RGB", (SIZE, SIZE), sky)
    draw = ImageDraw.Draw(image)
    horizon = SIZE * rng.uniform(0.55, 0.62)
    sx = SIZE * (0.15 if SIDES[side] > 0.5 else 0.85) + rng.uniform(-6, 6)
    draw.ellipse([sx - 9, 10, sx + 9, 28], fill=light)  # the sun or the moon, opposite the building
    hill = (70, 120, 60) if period != "深夜" else (25, 50, 35)
    draw.polygon([(0, horizon + rng.uniform(-6, 6)), (SIZE * 0.5, horizon - rng.uniform(8, 16)), (SIZE, horizon + rng.uniform(-6, 6)), (SIZE, SIZE), (0, SIZE)], fill=hill)
    if river:
        y = SIZE * rng.uniform(0.8, 0.86)
        draw.polygon([(0, y), (SIZE, y - 8), (SIZE, y + 4), (0, y + 12)], fill=(60, 110, 200))
    bx = SIZE * SIDES[side] + rng.uniform(-5, 5)
    base = horizon + 4
    if building == "小屋":
        draw.rectangle([bx - 12, base - 16, bx + 12, base], fill=(170, 110, 70))
        draw.polygon([(bx - 15, base - 16), (bx, base - 30), (bx + 15, base - 16)], fill=(130, 40, 30))
    elif building == "宝塔":
        for level in range(4):
            w = 14 - level * 3
            y = base - level * 9
            draw.rectangle([bx - w, y - 8, bx + w, y], fill=(190, 60, 50))
            draw.line([(bx - w - 3, y - 8), (bx + w + 3, y - 8)], fill=(60, 30, 20), width=2)
    elif building == "风车":
        draw.polygon([(bx - 6, base), (bx - 3, base - 26), (bx + 3, base - 26), (bx + 6, base)], fill=(220, 220, 210))
        hub = (bx, base - 26)
        turn = rng.uniform(0, math.pi / 2)
        for k in range(4):
            a = turn + k * math.pi / 2
            draw.line([hub, (hub[0] + 16 * math.cos(a), hub[1] + 16 * math.sin(a))], fill=(110, 80, 50), width=3)
    else:  # 灯塔
        draw.polygon([(bx - 7, base), (bx - 4, base - 32), (bx + 4, base - 32), (bx + 7, base)], fill=(240, 240, 240))
        draw.rectangle([bx - 6, base - 20, bx + 6, base - 14], fill=(200, 30, 30))
        draw.ellipse([bx - 4, base - 38, bx + 4, base - 30], fill=(255, 230, 80))
    free = [x for x in range(10, SIZE - 10, 12) if abs(x - bx) > 20]
    rng.shuffle(free)
    for x in sorted(free[:trees]):
        y = horizon + rng.uniform(2, 10)
        draw.rectangle([x - 2, y - 6, x + 2, y + 6], fill=(90, 60, 30))
        draw.ellipse([x - 7, y - 20, x + 7, y - 4], fill=(30, 100, 40) if period != "深夜" else (15, 55, 25))
    for k in range(birds):
        x, y = SIZE * (0.4 + 0.18 * k) + rng.uniform(-5, 5), rng.uniform(14, 34)
        draw.line([(x - 6, y - 4), (x, y), (x + 6, y - 4)], fill=(30, 30, 30) if period != "深夜" else (230, 230, 230), width=2)
    pixels = image.load()
    for _ in range(300):  # a little noise so no two drawings are alike
        x, y = rng.randrange(SIZE), rng.randrange(SIZE)
        r, g, b = pixels[x, y]
        d = rng.randint(-25, 25)
        pixels[x, y] = (max(0, min(255, r + d)), max(0, min(255, g + d)), max(0, min(255, b + d)))
    return image


def _landscape_captions(rng: random.Random, attributes) -> list[str]:
    period, trees, building, side, river, birds = attributes
    tree_text = TREE_WORDS[trees]
    water = RIVER[river]
    sky = f"，天上{BIRDS[birds]}" if birds else ""
    forms = [
        f"{period}时分，山坡上{tree_text}，{side}是一座{building}" + (f"，{water}" if water else ""),
        f"{side}立着{building}的山野，{period}，{tree_text}" + ("，山下有河" if river else "，不见河流"),
        f"一幅{period}的风景：{building}在{side}，{tree_text}" + ("，河水从前面流过" if river else ""),
        f"{period}的山坡，{tree_text}，{building}位于画面{side}" + ("，还有小河" if river else ""),
        f"画中是{period}，{side}有座{building}，" + (f"{tree_text}" if trees else "坡上光秃秃的") + ("，近处一条河" if river else ""),
    ]
    forms = [form + sky for form in forms]
    rng.shuffle(forms)
    return forms


# ----------------------------------------------------------------------------- writing

DATASETS = {
    "tiles": (_tile_attributes, _draw_tile, _tile_captions),
    "clocks": (_clock_attributes, _draw_clock, _clock_captions),
    "landscapes": (_landscape_attributes, _draw_landscape, _landscape_captions),
}


def vocabulary(name: str) -> set[str]:
    """Every caption of dataset `name` as written (one per attribute combination and form)."""
    attributes, _, captions = DATASETS[name]
    return {c for a in attributes() for c in captions(random.Random(0), a)}


def write_dataset(name: str, root: Path, *, train: int, val: int, seed: int = 0) -> Path:
    """Dataset `name` under `root` in the AIC-ICC layout: `train` images drawn from all
    attribute combinations, `val` images each with attributes no other val image has."""
    attributes, draw, captions = DATASETS[name]
    combos = attributes()
    if val > len(combos):
        raise ValueError(f"{name} has {len(combos)} attribute combinations, fewer than --val {val}.")
    rng = random.Random(f"{name}-{seed}")
    root = Path(root)
    for split, count in (("train", train), ("val", val)):
        layout = AIC_SPLITS[split]
        folder = root / layout.release / layout.images
        folder.mkdir(parents=True, exist_ok=True)
        chosen = rng.sample(combos, count) if split == "val" else [rng.choice(combos) for _ in range(count)]
        entries = []
        for index, combo in enumerate(chosen):
            file_name = f"{name}_{split}_{index:05d}.png"
            draw(rng, combo).save(folder / file_name)
            entries.append({"url": "", "image_id": file_name, "caption": captions(rng, combo)})
        (root / layout.release / layout.annotations).write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    return root
