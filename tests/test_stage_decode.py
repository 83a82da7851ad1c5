"""Tests for the decode stage: a batch mixing good and bad image URIs, local and over real HTTP."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from http_fault_server import FaultServer
from PIL import Image

from vlclip_core import schema as S
from vlclip_core.batch import object_column
from vlclip_core.config import ImageConfig, VlclipConfig
from vlclip_core.errors import StageInputError
from vlclip_core.stages.decode import DecodeStage


def config(**images) -> VlclipConfig:
    base = dict(read_timeout_s=0.5, retries=1, backoff_s=0.01, max_side=64, allowed_hosts=["127.0.0.1"])
    base.update(images)
    return VlclipConfig(images=ImageConfig(**base))


def batch_of(uris) -> dict:
    n = len(uris)
    ids = object_column(n)
    ids[:] = [f"SKU-{k:03d}" for k in range(n)]
    uri_col = object_column(n)
    uri_col[:] = list(uris)
    return {S.ITEM_ID: ids, S.IMAGE_URI: uri_col, S.TITLE: ids.copy()}


@pytest.fixture()
def good_jpeg(tmp_path):
    path = tmp_path / "good.jpg"
    Image.new("RGB", (128, 96), (10, 200, 30)).save(path, "JPEG", quality=95)
    return path


def test_mixed_batch_keeps_every_row_and_types_each_error(tmp_path, good_jpeg):
    with FaultServer() as srv:
        uris = [
            str(good_jpeg),
            srv.url("/ok.jpg"),
            None,
            "   ",
            str(tmp_path / "missing.jpg"),
            srv.url("/404"),
            srv.url("/truncated.jpg"),
            srv.url("/text"),
            srv.url("/empty"),
            "ftp://example.com/a.jpg",
        ]
        out = DecodeStage(config())(batch_of(uris))
    expected = [
        None,
        None,
        "missing_image_uri",
        "missing_image_uri",
        "missing_file",
        "http_404",
        "truncated_image",
        "not_an_image",
        "empty_file",
        "scheme_not_allowed",
    ]
    assert all(len(col) == len(uris) for col in out.values())
    assert list(out[S.ERROR_TYPE]) == expected
    assert list(out[S.STATUS]) == ["ok", "ok"] + ["error"] * 8
    assert set(out[S.ERROR_STAGE][2:]) == {"decode"}
    assert list(out[S.TITLE]) == [f"SKU-{k:03d}" for k in range(len(uris))]
    assert S.STAGE_SECONDS_PREFIX + "decode" in out


def test_good_rows_carry_sha_pixels_and_size(good_jpeg):
    out = DecodeStage(config(max_side=64))(batch_of([str(good_jpeg)]))
    assert out[S.IMAGE_SHA][0] == hashlib.sha256(good_jpeg.read_bytes()).hexdigest()
    assert out[S.IMAGE_HW].dtype == np.int32 and out[S.IMAGE_HW].tolist() == [[48, 64]]
    pixels = np.frombuffer(out[S.IMAGE_RGB][0], dtype=np.uint8).reshape(48, 64, 3)
    assert np.abs(pixels.astype(int) - [10, 200, 30]).max() <= 8


def test_error_rows_have_no_image_outputs(tmp_path, good_jpeg):
    out = DecodeStage(config())(batch_of([str(tmp_path / "nope.jpg"), str(good_jpeg)]))
    assert out[S.IMAGE_SHA][0] is None and out[S.IMAGE_RGB][0] is None
    assert out[S.IMAGE_HW].tolist() == [[0, 0], [48, 64]]
    assert "nope.jpg" in out[S.ERROR_MESSAGE][0]


def test_rows_already_in_error_pass_through_untouched(good_jpeg):
    batch = batch_of([str(good_jpeg), str(good_jpeg)])
    batch[S.STATUS] = object_column(2, S.STATUS_OK)
    batch[S.STATUS][1] = S.STATUS_ERROR
    for col, value in ((S.ERROR_STAGE, "ingest"), (S.ERROR_TYPE, "bad_row"), (S.ERROR_MESSAGE, "earlier")):
        batch[col] = object_column(2)
        batch[col][1] = value
    out = DecodeStage(config())(batch)
    assert out[S.STATUS].tolist() == ["ok", "error"]
    assert out[S.ERROR_STAGE][1] == "ingest" and out[S.IMAGE_SHA][1] is None


def test_each_good_row_is_fetched_once_even_when_a_neighbour_fails():
    with FaultServer() as srv:
        out = DecodeStage(config())(batch_of([srv.url("/ok.jpg"), srv.url("/404"), srv.url("/ok.jpg")]))
        assert srv.hits["/ok.jpg"] == 2 and srv.hits["/404"] == 1
    assert out[S.STATUS].tolist() == ["ok", "error", "ok"]


def test_image_too_large_for_the_pixel_limit_is_an_error_row(tmp_path):
    path = tmp_path / "big.png"
    buf = io.BytesIO()
    Image.new("RGB", (300, 300)).save(buf, "PNG")
    path.write_bytes(buf.getvalue())
    out = DecodeStage(config(max_pixels=10_000))(batch_of([str(path)]))
    assert out[S.ERROR_TYPE][0] == "too_many_pixels" and str(path) in out[S.ERROR_MESSAGE][0]


def test_missing_input_column_is_named():
    with pytest.raises(StageInputError, match="image_uri"):
        DecodeStage(config())({S.ITEM_ID: object_column(1, "SKU-1")})


@pytest.mark.parametrize("threads", [8, 1])
def test_a_batch_fetches_its_images_over_http_at_once_or_one_by_one(tmp_path, threads):
    from benchmarks.loopback import ImageServer

    paths = []
    for k in range(6):
        paths.append(tmp_path / f"img-{k}.jpg")
        Image.new("RGB", (40, 30), (10 * k, 100, 30)).save(paths[-1], "JPEG")
    with ImageServer(str(tmp_path), delay_s=0.2) as server:
        uris = [server.url_of(str(p)) for p in paths] + ["http://127.0.0.1:9/missing.jpg"]
        cfg = config(fetch_threads=threads, allowed_hosts=[server.host_port, "127.0.0.1:9"], retries=0)
        out = DecodeStage(cfg)(batch_of(uris))
        counts = server.counts()
    assert list(out[S.STATUS]) == [S.STATUS_OK] * 6 + [S.STATUS_ERROR]  # each row keeps its own outcome
    assert list(out[S.IMAGE_SHA][:6]) == [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    assert counts["requests"] == counts["served"] == 6  # each image fetched once
    if threads == 1:
        assert counts["max_in_flight"] == 1
    else:  # the 0.2 s waits overlap (all six at once unless the machine is starved)
        assert counts["max_in_flight"] >= 3
