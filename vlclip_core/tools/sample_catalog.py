"""Deterministic demo catalog: busy synthetic product photos with known boxes and noisy e-commerce text."""

from __future__ import annotations

import glob
import logging
import math
import os
import random
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from vlclip_core import schema as S

log = logging.getLogger(__name__)

TRUE_BOX = "true_box"  # demo-only column: the product's normalised x0, y0, x1, y1
PART_FILE = "part-00000.parquet"
Box = Tuple[float, float, float, float]
RGB = Tuple[int, int, int]

COLOURS: Dict[str, RGB] = {
    "Black": (28, 28, 30),
    "White": (236, 236, 232),
    "Navy Blue": (28, 42, 96),
    "Royal Blue": (40, 80, 200),
    "Red": (196, 32, 40),
    "Forest Green": (34, 110, 52),
    "Grey": (128, 128, 132),
    "Brown": (120, 72, 40),
    "Pink": (232, 120, 170),
    "Yellow": (236, 196, 40),
    "Orange": (236, 120, 30),
    "Beige": (214, 196, 160),
}
BRANDS = (
    "Northpeak",
    "UrbanTrail",
    "Veloce",
    "Maison Lune",
    "Brightway",
    "Kestrel & Co",
    "Zenhome",
    "Tidewater",
    "ACMEGEAR",
    "Solstice",
    "Ironbark",
    "Pepperell",
)
BOILERPLATE = (
    "100% brand new and high quality!",
    "Satisfaction guaranteed, contact us with any questions.",
    "Please allow 1-2cm differences due to manual measurement.",
    "Colors may vary slightly due to different monitor settings.",
    "Fast shipping from US warehouse!!!",
    "Perfect gift for birthday, Christmas, Father's Day, Mother's Day, anniversary.",
    "★★★★★ Thousands of happy customers <br><br>",
    "Package includes: 1 x item (accessories not included).",
    "Easy returns within 30 days. Buy with confidence.",
    "HOT SALE - limited stock, order now!",
)


@dataclass(frozen=True)
class ProductSpec:
    """How one product type is named, described and drawn."""

    nouns: Tuple[str, ...]
    adjectives: Tuple[str, ...]
    keywords: Tuple[str, ...]
    materials: Tuple[str, ...]
    sizes: Tuple[str, ...]
    patterns: Tuple[str, ...]
    genders: Tuple[str, ...]
    facts: Tuple[str, ...]
    aspect: float  # width / height of the drawn product
    draw: Callable[[ImageDraw.ImageDraw, Box, RGB, random.Random], None]


# --- product drawings: each fills its box (x0, y0, x1, y1) on a transparent RGBA layer -----------


def _shade(colour: RGB, factor: float) -> Tuple[int, int, int, int]:
    return tuple(max(0, min(255, int(c * factor))) for c in colour) + (255,)


def _at(box: Box, fx: float, fy: float) -> Tuple[float, float]:
    x0, y0, x1, y1 = box
    return x0 + fx * (x1 - x0), y0 + fy * (y1 - y0)


def _rect(box: Box, fx0: float, fy0: float, fx1: float, fy1: float) -> List[float]:
    return [*_at(box, fx0, fy0), *_at(box, fx1, fy1)]


def _poly(box: Box, points) -> List[Tuple[float, float]]:
    return [_at(box, fx, fy) for fx, fy in points]


def _draw_running_shoe(d: ImageDraw.ImageDraw, box: Box, colour: RGB, rng: random.Random) -> None:
    upper = ((0.0, 0.8), (0.03, 0.0), (0.3, 0.1), (0.55, 0.38), (0.95, 0.55), (1.0, 0.8))
    d.polygon(_poly(box, upper), fill=_shade(colour, 1.0), outline=_shade(colour, 0.5))
    sole_radius = (box[3] - box[1]) * 0.1
    d.rounded_rectangle(_rect(box, 0.0, 0.78, 1.0, 1.0), radius=sole_radius, fill=(240, 240, 240, 255))
    for k in range(4):
        d.line(
            [_at(box, 0.3 + 0.06 * k, 0.16 + 0.06 * k), _at(box, 0.38 + 0.06 * k, 0.1 + 0.06 * k)],
            fill=(250, 250, 250, 255),
            width=2,
        )
    d.arc(_rect(box, 0.15, 0.25, 0.85, 0.95), 200, 330, fill=_shade(colour, 1.6), width=3)


def _draw_handbag(d: ImageDraw.ImageDraw, box: Box, colour: RGB, rng: random.Random) -> None:
    strap = max(3, int((box[2] - box[0]) * 0.05))
    d.ellipse(_rect(box, 0.22, 0.0, 0.78, 0.7), outline=_shade(colour, 0.6), width=strap)
    d.polygon(_poly(box, ((0.1, 0.3), (0.9, 0.3), (1.0, 1.0), (0.0, 1.0))), fill=_shade(colour, 1.0))
    d.polygon(_poly(box, ((0.1, 0.3), (0.9, 0.3), (0.8, 0.58), (0.2, 0.58))), fill=_shade(colour, 0.8))
    d.rectangle(_rect(box, 0.46, 0.52, 0.54, 0.62), fill=(212, 175, 55, 255))


def _draw_table_lamp(d: ImageDraw.ImageDraw, box: Box, colour: RGB, rng: random.Random) -> None:
    d.polygon(
        _poly(box, ((0.18, 0.0), (0.82, 0.0), (1.0, 0.45), (0.0, 0.45))),
        fill=_shade(colour, 1.0),
        outline=_shade(colour, 0.7),
    )
    d.rectangle(_rect(box, 0.46, 0.45, 0.54, 0.9), fill=(90, 80, 70, 255))
    d.ellipse(_rect(box, 0.2, 0.86, 0.8, 1.0), fill=(70, 60, 50, 255))


def _draw_coffee_mug(d: ImageDraw.ImageDraw, box: Box, colour: RGB, rng: random.Random) -> None:
    width = box[2] - box[0]
    d.ellipse(_rect(box, 0.55, 0.2, 1.0, 0.75), outline=_shade(colour, 0.85), width=max(4, int(width * 0.09)))
    d.rounded_rectangle(_rect(box, 0.0, 0.04, 0.78, 1.0), radius=width * 0.08, fill=_shade(colour, 1.0))
    d.ellipse(_rect(box, 0.0, 0.0, 0.78, 0.1), fill=_shade(colour, 0.6))
    if rng.random() < 0.5:
        d.text(_at(box, 0.18, 0.45), "BEST DAD", fill=(250, 250, 250, 255))


def _draw_t_shirt(d: ImageDraw.ImageDraw, box: Box, colour: RGB, rng: random.Random) -> None:
    shape = (
        (0.35, 0.0),
        (0.0, 0.15),
        (0.1, 0.4),
        (0.22, 0.33),
        (0.22, 1.0),
        (0.78, 1.0),
        (0.78, 0.33),
        (0.9, 0.4),
        (1.0, 0.15),
        (0.65, 0.0),
    )
    d.polygon(_poly(box, shape), fill=_shade(colour, 1.0), outline=_shade(colour, 0.6))
    d.chord(_rect(box, 0.36, -0.1, 0.64, 0.1), 0, 180, fill=(0, 0, 0, 0))
    if rng.random() < 0.5:
        for k in range(3):
            d.rectangle(_rect(box, 0.22, 0.5 + 0.14 * k, 0.78, 0.56 + 0.14 * k), fill=_shade(colour, 0.6))


def _draw_backpack(d: ImageDraw.ImageDraw, box: Box, colour: RGB, rng: random.Random) -> None:
    d.ellipse(_rect(box, 0.35, 0.0, 0.65, 0.25), outline=_shade(colour, 0.5), width=4)
    d.rectangle(_rect(box, 0.0, 0.3, 0.08, 0.9), fill=_shade(colour, 0.6))
    d.rectangle(_rect(box, 0.92, 0.3, 1.0, 0.9), fill=_shade(colour, 0.6))
    width = box[2] - box[0]
    d.rounded_rectangle(_rect(box, 0.05, 0.12, 0.95, 1.0), radius=width * 0.2, fill=_shade(colour, 1.0))
    d.rounded_rectangle(_rect(box, 0.2, 0.58, 0.8, 0.93), radius=width * 0.08, fill=_shade(colour, 0.75))
    d.line([_at(box, 0.25, 0.66), _at(box, 0.75, 0.66)], fill=(30, 30, 30, 255), width=2)


def _draw_wristwatch(d: ImageDraw.ImageDraw, box: Box, colour: RGB, rng: random.Random) -> None:
    d.rectangle(_rect(box, 0.25, 0.0, 0.75, 1.0), fill=_shade(colour, 1.0))
    half = 0.5 * (box[2] - box[0]) / (box[3] - box[1])  # the case is round: its height in box units
    d.ellipse(_rect(box, 0.0, 0.5 - half, 1.0, 0.5 + half), fill=(192, 192, 200, 255))
    d.ellipse(_rect(box, 0.1, 0.5 - 0.8 * half, 0.9, 0.5 + 0.8 * half), fill=(250, 250, 245, 255))
    centre = _at(box, 0.5, 0.5)
    d.line([centre, _at(box, 0.5, 0.5 - 0.6 * half)], fill=(20, 20, 20, 255), width=2)
    d.line([centre, _at(box, 0.75, 0.5)], fill=(20, 20, 20, 255), width=2)


def _draw_sunglasses(d: ImageDraw.ImageDraw, box: Box, colour: RGB, rng: random.Random) -> None:
    frame = _shade(colour, 1.0)
    d.line([_at(box, 0.0, 0.0), _at(box, 0.06, 0.3)], fill=frame, width=3)
    d.line([_at(box, 1.0, 0.0), _at(box, 0.94, 0.3)], fill=frame, width=3)
    for fx0 in (0.04, 0.54):
        d.ellipse(_rect(box, fx0, 0.2, fx0 + 0.42, 1.0), fill=(35, 35, 45, 255), outline=frame, width=3)
    d.arc(_rect(box, 0.44, 0.25, 0.56, 0.55), 180, 360, fill=frame, width=3)


_SHOE_SIZES = tuple(str(s) for s in (6, 7, 8, 8.5, 9, 9.5, 10, 10.5, 11, 12))
_APPAREL_SIZES = ("XS", "S", "M", "L", "XL", "XXL")
PRODUCTS: Dict[str, ProductSpec] = {
    "running shoe": ProductSpec(
        ("Running Shoe", "Sneaker", "Athletic Shoe", "Trainer", "Gym Shoe", "Jogging Shoe"),
        ("Lightweight", "Breathable", "Cushioned", "Non-Slip", "Comfortable", "Fashion"),
        ("Walking", "Tennis", "Workout", "Road Running", "Sports", "Casual"),
        ("Mesh", "Knit", "Synthetic", "Leather"),
        _SHOE_SIZES,
        ("Solid", "Colorblock", "Two-Tone"),
        ("Men's", "Women's", "Unisex"),
        (
            "Rubber outsole with deep grooves for grip.",
            "Padded collar and tongue.",
            "Foam midsole absorbs impact on long runs.",
        ),
        2.0,
        _draw_running_shoe,
    ),
    "handbag": ProductSpec(
        ("Handbag", "Tote Bag", "Shoulder Bag", "Purse", "Top Handle Bag", "Satchel"),
        ("Large Capacity", "Elegant", "Vintage", "Designer Style", "Luxury", "Everyday"),
        ("Work", "Travel", "Office", "Shopping", "Ladies", "Crossbody"),
        ("PU Leather", "Genuine Leather", "Canvas", "Vegan Leather"),
        ("Small", "Medium", "Large"),
        ("Solid", "Quilted", "Croc Embossed"),
        ("Women's",),
        ("Zip closure with interior pockets.", "Detachable shoulder strap.", "Gold-tone hardware."),
        1.3,
        _draw_handbag,
    ),
    "table lamp": ProductSpec(
        ("Table Lamp", "Bedside Lamp", "Desk Lamp", "Nightstand Lamp", "Accent Lamp"),
        ("Modern", "Minimalist", "Dimmable", "Farmhouse", "Mid-Century", "Touch Control"),
        ("Bedroom", "Living Room", "Office", "Reading Light", "Home Decor", "LED Bulb Included"),
        ("Ceramic", "Metal", "Linen Shade", "Wood"),
        ('14"', '18"', '22"', '26"'),
        ("Solid", "Textured"),
        ("",),
        ("E26 socket, bulb up to 60W.", "Fabric drum shade diffuses soft light.", "Weighted base."),
        0.65,
        _draw_table_lamp,
    ),
    "coffee mug": ProductSpec(
        ("Coffee Mug", "Tea Cup", "Ceramic Mug", "Travel Mug", "Cup"),
        ("Funny", "Large", "Microwave Safe", "Dishwasher Safe", "Novelty", "Cute"),
        ("Gift for Him", "Gift for Her", "Office", "Birthday", "Coffee Lover", "Tea"),
        ("Ceramic", "Porcelain", "Stoneware", "Stainless Steel"),
        ("11 oz", "15 oz", "20 oz"),
        ("Solid", "Printed Text", "Speckled"),
        ("",),
        ("Holds 11 ounces of your favorite drink.", "Lead-free glaze.", "Comfortable C-shaped handle."),
        1.1,
        _draw_coffee_mug,
    ),
    "t-shirt": ProductSpec(
        ("T-Shirt", "Tee", "Crew Neck Shirt", "Short Sleeve Top", "Graphic Tee"),
        ("Cotton", "Soft", "Slim Fit", "Classic", "Casual", "Crewneck"),
        ("Summer", "Gym", "Basic", "Everyday", "Undershirt", "Plus Size"),
        ("100% Cotton", "Cotton Blend", "Polyester", "Jersey Knit"),
        _APPAREL_SIZES,
        ("Solid", "Striped", "Graphic Print"),
        ("Men's", "Women's", "Unisex", "Kids'"),
        ("Ribbed crew neck.", "Tag-free for comfort.", "Pre-shrunk fabric keeps its shape."),
        1.0,
        _draw_t_shirt,
    ),
    "backpack": ProductSpec(
        ("Backpack", "Laptop Backpack", "School Bag", "Daypack", "Rucksack", "Bookbag"),
        ("Waterproof", "Anti-Theft", "Large", "Durable", "Lightweight", "USB Charging Port"),
        ("Travel", "College", "Hiking", "Business", "Fits 15.6 Inch Laptop", "Outdoor"),
        ("Nylon", "Polyester", "Canvas", "Oxford Cloth"),
        ("20L", "25L", "30L", "40L"),
        ("Solid", "Camo", "Colorblock"),
        ("Men's", "Women's", "Unisex", "Kids'"),
        (
            "Padded laptop compartment.",
            "Two side water bottle pockets.",
            "Adjustable padded shoulder straps.",
        ),
        0.75,
        _draw_backpack,
    ),
    "wristwatch": ProductSpec(
        ("Wristwatch", "Watch", "Analog Watch", "Quartz Watch", "Dress Watch", "Sports Watch"),
        ("Waterproof", "Luxury", "Classic", "Minimalist", "Stainless Steel", "Fashion"),
        ("Business", "Casual", "Gift", "Date Display", "Luminous", "Chronograph Look"),
        ("Leather Strap", "Stainless Steel", "Silicone Band", "Nylon Strap"),
        ("38mm", "40mm", "42mm", "44mm"),
        ("Solid", "Textured Dial"),
        ("Men's", "Women's", "Unisex"),
        ("Japanese quartz movement.", "Water resistant to 30 meters.", "Scratch resistant mineral crystal."),
        0.5,
        _draw_wristwatch,
    ),
    "sunglasses": ProductSpec(
        ("Sunglasses", "Shades", "Sun Glasses", "Polarized Sunglasses", "Eyewear"),
        ("Polarized", "UV400", "Retro", "Oversized", "Lightweight", "Classic"),
        ("Driving", "Fishing", "Beach", "Outdoor", "Aviator Style", "Wayfarer Style"),
        ("Acetate", "Metal", "TR90", "Plastic"),
        ("Standard", "Wide Fit"),
        ("Solid", "Tortoise", "Gradient Lens"),
        ("Men's", "Women's", "Unisex"),
        ("UV400 lenses block 100% UVA/UVB.", "Spring hinges.", "Includes microfiber pouch."),
        2.4,
        _draw_sunglasses,
    ),
}
PRODUCT_TYPES = tuple(PRODUCTS)


# --- the busy scene around the product -------------------------------------------------------------


def _background(nrng: np.random.Generator, rng: random.Random, size: Tuple[int, int]) -> Image.Image:
    """Striped, noisy wallpaper above a wood-grain floor."""
    w, h = size
    xx, yy = np.arange(w, dtype=np.float32)[None, :], np.arange(h, dtype=np.float32)[:, None]
    wall = np.array([rng.randint(120, 230) for _ in range(3)], dtype=np.float32)
    stripes = 14.0 * np.sin(xx * rng.uniform(0.05, 0.3) + yy * rng.uniform(-0.05, 0.05))
    img = wall + (stripes + 9.0 * nrng.standard_normal((h, w), dtype=np.float32))[..., None]
    floor_y = int(h * rng.uniform(0.6, 0.78))
    wood = np.array([rng.randint(90, 170), rng.randint(60, 120), rng.randint(30, 80)], dtype=np.float32)
    grain = 10.0 * np.sin(yy[floor_y:] * 0.9 + 3.0 * np.sin(xx * 0.05))
    noise = 6.0 * nrng.standard_normal((h - floor_y, w), dtype=np.float32)
    img[floor_y:] = wood + (grain + noise)[..., None]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _random_colour(rng: random.Random) -> Tuple[int, int, int]:
    return rng.randint(20, 235), rng.randint(20, 235), rng.randint(20, 235)


def _furniture(d: ImageDraw.ImageDraw, rng: random.Random, size: Tuple[int, int]) -> None:
    w, h = size
    for _ in range(rng.randint(1, 3)):
        x, y = rng.uniform(0, w * 0.8), rng.uniform(h * 0.05, h * 0.5)
        fw, fh = rng.uniform(0.2, 0.45) * w, rng.uniform(0.15, 0.35) * h
        kind = rng.choice(("frame", "shelf", "table", "window"))
        colour = _random_colour(rng)
        if kind == "table":
            d.rectangle([x, y + fh * 0.8, x + fw, y + fh], fill=colour)
            d.rectangle([x + 4, y + fh, x + 12, min(h, y + 2.2 * fh)], fill=colour)
            d.rectangle([x + fw - 12, y + fh, x + fw - 4, min(h, y + 2.2 * fh)], fill=colour)
        elif kind == "shelf":
            for k in range(3):
                d.rectangle([x, y + k * fh / 2, x + fw, y + k * fh / 2 + 6], fill=colour)
        else:
            d.rectangle([x, y, x + fw, y + fh], fill=colour, outline=(40, 30, 20), width=rng.randint(3, 8))


def _clutter(d: ImageDraw.ImageDraw, rng: random.Random, size: Tuple[int, int]) -> None:
    w, h = size
    for _ in range(rng.randint(6, 14)):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.02, 0.09) * min(w, h)
        shape, colour = rng.choice(("ellipse", "rect", "triangle", "books")), _random_colour(rng)
        if shape == "ellipse":
            d.ellipse([x - r, y - r * rng.uniform(0.5, 1.5), x + r, y + r], fill=colour)
        elif shape == "rect":
            d.rectangle([x - r, y - r, x + r * rng.uniform(0.5, 2), y + r], fill=colour)
        elif shape == "triangle":
            d.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
        else:
            for k in range(rng.randint(3, 6)):
                spine = [x + k * r * 0.35, y - r, x + (k + 0.9) * r * 0.35, y + r]
                d.rectangle(spine, fill=_random_colour(rng))


def _person(d: ImageDraw.ImageDraw, rng: random.Random, size: Tuple[int, int]) -> None:
    w, h = size
    ph = rng.uniform(0.6, 0.95) * h
    cx, top = rng.uniform(0.15, 0.85) * w, h - ph
    unit = ph / 8.0
    tone, cloth = rng.choice(((224, 172, 140), (160, 110, 80), (96, 64, 48))), _random_colour(rng)
    d.ellipse([cx - unit * 0.55, top, cx + unit * 0.55, top + unit * 1.1], fill=tone)
    torso = [cx - unit * 1.1, top + unit * 1.2, cx + unit * 1.1, top + unit * 4.4]
    d.rounded_rectangle(torso, radius=unit * 0.4, fill=cloth)
    for side in (-1.0, 1.0):
        arm = [(cx + side * unit, top + unit * 1.5), (cx + side * unit * 1.8, top + unit * 4.2)]
        d.line(arm, fill=cloth, width=int(unit * 0.5))
    for sx in (-0.55, 0.55):
        leg = [(cx + sx * unit, top + unit * 4.3), (cx + sx * unit * 1.2, h)]
        d.line(leg, fill=(40, 40, 60), width=int(unit * 0.6))


def _product_layer(
    size: Tuple[int, int], product_type: str, colour: RGB, rng: random.Random, scale: float
) -> Image.Image:
    """A transparent layer with the product drawn at a random place, `scale` times the usual area."""
    w, h = size
    aspect = PRODUCTS[product_type].aspect
    area = rng.uniform(0.06, 0.16) * scale * w * h
    pw = min(math.sqrt(area * aspect), 0.75 * w)
    ph = min(pw / aspect, 0.75 * h)
    pw = ph * aspect if ph == 0.75 * h else pw
    x0, y0 = rng.uniform(0.03 * w, w - pw - 0.03 * w), rng.uniform(0.03 * h, h - ph - 0.03 * h)
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    PRODUCTS[product_type].draw(ImageDraw.Draw(layer), (x0, y0, x0 + pw, y0 + ph), colour, rng)
    return layer


def draw_scene(
    rng: random.Random, nrng: np.random.Generator, product_type: str, colour: RGB
) -> Tuple[Image.Image, Box]:
    """A busy photo with the product somewhere in it; returns the image and the product's normalised box."""
    size = (rng.randrange(320, 481, 16), rng.randrange(320, 481, 16))
    scene = _background(nrng, rng, size)
    d = ImageDraw.Draw(scene)
    _furniture(d, rng, size)
    _clutter(d, rng, size)
    if rng.random() < 0.35:
        _person(d, rng, size)
    if rng.random() < 0.4:  # a smaller object of another type, so the detector must pick the right one
        other = rng.choice([p for p in PRODUCT_TYPES if p != product_type])
        distractor = _product_layer(size, other, _random_colour(rng), rng, 0.4)
        scene.paste(distractor, (0, 0), distractor)
    layer = _product_layer(size, product_type, colour, rng, 1.0)
    scene.paste(layer, (0, 0), layer)
    x0, y0, x1, y1 = layer.getchannel("A").getbbox()
    return scene, (x0 / size[0], y0 / size[1], x1 / size[0], y1 / size[1])


# --- noisy e-commerce text ---------------------------------------------------------------------------


def _title(rng: random.Random, spec: ProductSpec, brand: str, colour: str, size: str, gender: str) -> str:
    nouns = rng.sample(spec.nouns, 3)
    words = [
        gender,
        brand if rng.random() < 0.6 else "",
        *rng.sample(spec.adjectives, 2),
        nouns[0],
        *rng.sample(spec.keywords, 2),
        nouns[1],
        rng.choice(spec.adjectives),
        nouns[2],
        colour,
    ]
    words.append(f"Size {size}" if rng.random() < 0.7 else "")
    if rng.random() < 0.25:
        words.insert(0, rng.choice(("2024 NEW", "[Free Shipping]", "HOT!", "Best Seller")))
    title = " ".join(w for w in words if w)
    return title.upper() if rng.random() < 0.08 else title


def _description(rng: random.Random, spec: ProductSpec, brand: str, material: str, noun: str):
    if rng.random() < 0.04:
        return None
    parts = rng.sample(BOILERPLATE, rng.randint(2, 4))
    facts = [f"This {noun.lower()} is made of {material.lower()} by {brand}.", *rng.sample(spec.facts, 2)]
    parts[1:1] = facts if rng.random() < 0.8 else facts[1:]
    if rng.random() < 0.3:
        parts.append("Keywords: " + ", ".join(rng.sample(spec.keywords + spec.nouns, 5)).lower())
    return " ".join(parts)


def _attributes(rng: random.Random, brand: str, colour: str, material: str, size: str, pattern: str):
    attrs = {"brand": brand, "color": colour.lower(), "material": material, "size": size, "pattern": pattern}
    for key in ("pattern", "size", "material"):
        if rng.random() < 0.12:
            del attrs[key]
    return sorted(attrs.items())


def _item_text(rng: random.Random, product_type: str, colour: str) -> dict:
    spec = PRODUCTS[product_type]
    brand, material = rng.choice(BRANDS), rng.choice(spec.materials)
    size, pattern, gender = rng.choice(spec.sizes), rng.choice(spec.patterns), rng.choice(spec.genders)
    return {
        S.TITLE: _title(rng, spec, brand, colour, size, gender),
        S.DESCRIPTION: _description(rng, spec, brand, material, spec.nouns[0]),
        S.ATTRIBUTES: _attributes(rng, brand, colour, material, size, pattern),
    }


# --- the catalog -------------------------------------------------------------------------------------


def catalog_schema() -> pa.Schema:
    return pa.schema(
        [
            pa.field(S.ITEM_ID, pa.string(), nullable=False),
            pa.field(S.TITLE, pa.string()),
            pa.field(S.DESCRIPTION, pa.string()),
            pa.field(S.PRODUCT_TYPE, pa.string()),
            pa.field(S.ATTRIBUTES, pa.map_(pa.string(), pa.string())),
            pa.field(S.IMAGE_URI, pa.string()),
            pa.field(TRUE_BOX, pa.list_(pa.float32())),
        ]
    )


def sample_item(index: int, seed: int, images_dir: str) -> dict:
    """Item `index` of the catalog for `seed` (independent of the catalog size); writes its JPEG."""
    rng = random.Random(seed * 1_000_003 + index)
    nrng = np.random.default_rng([seed, index])
    product_type = PRODUCT_TYPES[index % len(PRODUCT_TYPES)]
    colour = rng.choice(sorted(COLOURS))
    item_id = f"SKU-{index:06d}"
    image, box = draw_scene(rng, nrng, product_type, COLOURS[colour])
    path = os.path.abspath(os.path.join(images_dir, f"{item_id}.jpg"))
    image.convert("RGB").save(path, "JPEG", quality=rng.randint(80, 92))
    return {
        S.ITEM_ID: item_id,
        **_item_text(rng, product_type, colour),
        S.PRODUCT_TYPE: product_type,
        S.IMAGE_URI: path,
        TRUE_BOX: [round(v, 5) for v in box],
    }


def make_sample_catalog(out_dir: str, n_items: int = 300, seed: int = 0) -> str:
    """Write `n_items` items (images in out_dir/images, Parquet in out_dir/catalog); return the catalog dir.

    >>> catalog_dir = make_sample_catalog("data/demo", n_items=300, seed=0)  # doctest: +SKIP
    """
    if n_items <= 0:
        raise ValueError(f"n_items must be > 0, got {n_items}")
    images_dir = os.path.join(out_dir, "images")
    os.makedirs(images_dir, exist_ok=True)
    rows = [sample_item(i, seed, images_dir) for i in range(n_items)]
    table = pa.Table.from_pylist(rows, schema=catalog_schema())
    path = write_catalog(table, os.path.join(out_dir, "catalog"))
    log.info("sample catalog: %d items (seed %d) at %s", n_items, seed, path)
    return path


def write_catalog(table: pa.Table, catalog_dir: str) -> str:
    """Replace the Parquet files of `catalog_dir` with `table` in one part file; return the absolute dir."""
    os.makedirs(catalog_dir, exist_ok=True)
    for old in glob.glob(os.path.join(catalog_dir, "*.parquet")):
        os.remove(old)
    pq.write_table(table, os.path.join(catalog_dir, PART_FILE))
    return os.path.abspath(catalog_dir)


def read_catalog(catalog_dir: str) -> pa.Table:
    """The catalog directory as one Arrow table (tests read it, change an item and write it back)."""
    return pq.read_table(catalog_dir)
