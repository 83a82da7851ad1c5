"""Decode stage: fetch each item's image through fetch.py, decode it to RGB, hash the fetched bytes."""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from vlclip_core import schema as S
from vlclip_core.batch import Batch, is_null, mark_error, object_column
from vlclip_core.config import VlclipConfig
from vlclip_core.errors import ItemError
from vlclip_core.images.codec import decode_image
from vlclip_core.images.fetch import fetch_bytes, redact_uri
from vlclip_core.stages.base import BatchStage

log = logging.getLogger(__name__)


class DecodeStage(BatchStage):
    """CPU stage: image_uri -> image_sha (sha256 hex of the fetched bytes), image_rgb, image_hw.

    image_rgb holds the raw bytes of a C-order (h, w, 3) uint8 array; image_hw is int32 (n, 2),
    (0, 0) on rows without an image. Each row is fetched once: a bad row is marked as an error row
    here (error_stage "decode") instead of failing its batch, so good neighbours are not re-fetched.
    """

    name = "decode"
    inputs = (S.ITEM_ID, S.IMAGE_URI)

    def __init__(self, config: VlclipConfig):
        self.cfg = config.images

    def new_outputs(self, n: int) -> Batch:
        return {
            S.IMAGE_SHA: object_column(n),
            S.IMAGE_RGB: object_column(n),
            S.IMAGE_HW: np.zeros((n, 2), dtype=np.int32),
        }

    def process(self, batch: Batch, idx: np.ndarray, out: Batch) -> None:
        """Each row on its own (rows write only their own cells), `images.fetch_threads` at once."""
        threads = min(self.cfg.fetch_threads, len(idx))
        if threads <= 1:
            for row in idx:
                self._row(batch, int(row), out)
            return
        with ThreadPoolExecutor(threads, thread_name_prefix="vlclip-fetch") as pool:
            list(pool.map(lambda row: self._row(batch, int(row), out), idx))  # re-raises an unexpected error

    def _row(self, batch: Batch, row: int, out: Batch) -> None:
        try:
            self._decode_row(batch[S.IMAGE_URI][row], row, out)
        except ItemError as err:
            log.debug("decode: item %s: %s", batch[S.ITEM_ID][row], err)
            mark_error(batch, row, self.name, err.error_type, err.message)

    def _decode_row(self, value, row: int, out: Batch) -> None:
        uri = image_uri_of(value)
        data = fetch_bytes(uri, self.cfg)
        try:
            rgb = decode_image(data, self.cfg)
        except ItemError as err:
            raise ItemError(err.error_type, f"{err.message} ({redact_uri(uri)})") from err
        out[S.IMAGE_SHA][row] = hashlib.sha256(data).hexdigest()
        out[S.IMAGE_RGB][row] = rgb.tobytes()
        out[S.IMAGE_HW][row] = rgb.shape[:2]


def image_uri_of(value) -> str:
    """The stripped URI string of a batch cell; None, NaN or blank -> ItemError("missing_image_uri")."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if is_null(value) or not str(value).strip():
        raise ItemError("missing_image_uri", "image_uri is null or blank")
    return str(value).strip()
