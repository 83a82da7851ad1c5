"""Contact sheet to eyeball results: each item's image with its grounding box, original vs enriched text."""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
import textwrap
from typing import List, Optional, Sequence, Tuple

from PIL import Image, ImageDraw, ImageFont

from vlclip_core.batch import is_null
from vlclip_core.config import ImageConfig
from vlclip_core.errors import ItemError
from vlclip_core.images.codec import decode_image
from vlclip_core.images.fetch import fetch_bytes

log = logging.getLogger(__name__)

PRED_COLOUR = (230, 30, 30)  # the detector's box (red), or orange when not grounded
UNGROUNDED_COLOUR = (245, 150, 20)
TRUE_COLOUR = (30, 170, 60)  # the known box of the demo catalog (green)
CAPTION_PX = 72  # caption strip under each tile of the PNG sheet
_PAGE_CSS = (
    "body{font-family:sans-serif;margin:16px;background:#f4f4f4}"
    ".item{display:flex;gap:16px;background:#fff;margin:0 0 12px;padding:10px;border-radius:6px}"
    ".item img{flex:none}.meta{font-size:13px;color:#555}.err{color:#b00}"
    "td{vertical-align:top;padding:2px 8px 2px 0}th{text-align:left;padding-right:8px;color:#333}"
)


def render_contact_sheet(
    rows: Sequence[dict], out_path: str, cfg: ImageConfig, columns: int = 4, thumb_px: int = 256
) -> str:
    """Write an HTML page (or a PNG grid when `out_path` ends with .png) for `rows`; return `out_path`.

    Each row is a dict with item_id, image_uri, title, description, enriched_text, enrichment_status,
    grounding_box (normalised x0, y0, x1, y1, or None), grounded, grounding_score, product_type and
    optionally true_box. Images load through fetch.py and images.py under `cfg`; an image that fails
    shows as a grey tile naming the error. The PNG grid is `columns` tiles wide, each tile
    `thumb_px` x (`thumb_px` + CAPTION_PX) pixels.
    """
    if columns <= 0 or thumb_px <= 0:
        raise ValueError(f"columns and thumb_px must be > 0, got {columns} and {thumb_px}")
    tiles = [_tile(row, cfg, thumb_px) for row in rows]
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    if out_path.lower().endswith(".png"):
        _png_sheet(rows, tiles, columns, thumb_px).save(out_path, "PNG")
    else:
        with open(out_path, "w", encoding="utf-8") as fh:
            fh.write(_html_page(rows, tiles))
    log.info("contact sheet of %d items written to %s", len(rows), out_path)
    return out_path


def sheet_size(n_items: int, columns: int = 4, thumb_px: int = 256) -> Tuple[int, int]:
    """Pixel size (width, height) of the PNG sheet for `n_items`."""
    cols = max(1, min(columns, n_items))
    return cols * thumb_px, max(1, math.ceil(n_items / cols)) * (thumb_px + CAPTION_PX)


# --- thumbnails ----------------------------------------------------------------------------------


def _tile(row: dict, cfg: ImageConfig, thumb_px: int) -> Image.Image:
    """A thumbnail (longest side thumb_px) of the row's image with its boxes drawn, or an error tile."""
    try:
        img = Image.fromarray(decode_image(fetch_bytes(str(row.get("image_uri") or ""), cfg), cfg))
    except ItemError as err:
        return _error_tile(f"{err.error_type}", thumb_px)
    img.thumbnail((thumb_px, thumb_px), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    _draw_box(draw, img.size, row.get("true_box"), TRUE_COLOUR)
    colour = PRED_COLOUR if row.get("grounded") else UNGROUNDED_COLOUR
    _draw_box(draw, img.size, row.get("grounding_box"), colour)
    return img


def _error_tile(text: str, thumb_px: int) -> Image.Image:
    img = Image.new("RGB", (thumb_px, thumb_px), (200, 200, 200))
    ImageDraw.Draw(img).text((8, thumb_px // 2 - 8), f"no image: {text}", fill=(160, 0, 0))
    return img


def normalised_box(box) -> Optional[Tuple[float, float, float, float]]:
    """`box` as four finite floats, or None when it is absent, NaN or malformed."""
    if box is None:
        return None
    try:
        values = tuple(float(v) for v in box)
    except (TypeError, ValueError):
        return None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        return None
    return values


def _draw_box(draw: ImageDraw.ImageDraw, size: Tuple[int, int], box, colour) -> None:
    values = normalised_box(box)
    if values is None:
        return
    w, h = size
    x0, y0, x1, y1 = values
    draw.rectangle([x0 * w, y0 * h, max(x0, x1) * w, max(y0, y1) * h], outline=colour, width=2)


# --- HTML ----------------------------------------------------------------------------------------


def _png_base64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _html_page(rows: Sequence[dict], tiles: List[Image.Image]) -> str:
    items = "\n".join(_html_item(row, tile) for row, tile in zip(rows, tiles))
    legend = (
        "<p class='meta'>Boxes: <b style='color:#e61e1e'>red</b> grounded detection, "
        "<b style='color:#f59614'>orange</b> detection below threshold, "
        "<b style='color:#1eaa3c'>green</b> known product box.</p>"
    )
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>vlclip contact sheet</title>"
        f"<style>{_PAGE_CSS}</style></head><body><h1>vlclip contact sheet ({len(rows)} items)</h1>"
        f"{legend}\n{items}\n</body></html>\n"
    )


def _html_item(row: dict, tile: Image.Image) -> str:
    fields = [
        ("product type", row.get("product_type")),
        ("title", row.get("title")),
        ("description", row.get("description")),
        ("enriched text", row.get("enriched_text")),
        ("enrichment", row.get("enrichment_status")),
        ("grounding", _grounding_text(row)),
    ]
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{_cell(v)}</td></tr>" for k, v in fields)
    return (
        f"<div class='item' id='{html.escape(str(row.get('item_id')), quote=True)}'>"
        f"<img alt='{html.escape(str(row.get('item_id')), quote=True)}' width='{tile.size[0]}' "
        f"height='{tile.size[1]}' src='data:image/png;base64,{_png_base64(tile)}'>"
        f"<div><h3>{html.escape(str(row.get('item_id')))}</h3><table>{table}</table></div></div>"
    )


def _cell(value) -> str:
    if is_null(value):
        return "<span class='meta'>(none)</span>"
    return html.escape(str(value))


def _grounding_text(row: dict) -> str:
    score = row.get("grounding_score")
    score_text = f"{float(score):.3f}" if score is not None and math.isfinite(float(score)) else "n/a"
    box = normalised_box(row.get("grounding_box"))
    box_text = ", ".join(f"{v:.3f}" for v in box) if box else "no box"
    return f"grounded={bool(row.get('grounded'))} score={score_text} box=({box_text})"


# --- PNG grid ------------------------------------------------------------------------------------


def _png_sheet(rows: Sequence[dict], tiles: List[Image.Image], columns: int, thumb_px: int) -> Image.Image:
    sheet = Image.new("RGB", sheet_size(len(rows), columns, thumb_px), (255, 255, 255))
    cols = max(1, min(columns, len(rows)))
    font = ImageFont.load_default()
    for k, (row, tile) in enumerate(zip(rows, tiles)):
        x, y = (k % cols) * thumb_px, (k // cols) * (thumb_px + CAPTION_PX)
        sheet.paste(tile, (x + (thumb_px - tile.size[0]) // 2, y + (thumb_px - tile.size[1]) // 2))
        ImageDraw.Draw(sheet).multiline_text(
            (x + 4, y + thumb_px + 2), _caption(row, thumb_px), fill=(20, 20, 20), font=font, spacing=2
        )
    return sheet


def _caption(row: dict, thumb_px: int) -> str:
    width = max(10, thumb_px // 7)
    score = row.get("grounding_score")
    grounded = f" g={float(score):.2f}" if row.get("grounded") and score is not None else ""
    head = f"{row.get('item_id')} [{row.get('enrichment_status') or '-'}]{grounded}"
    text = str(row.get("enriched_text") or row.get("title") or "")
    return "\n".join([head[:width], *textwrap.wrap(text, width)[:3]])
