"""Per-item deadlines: an item that hangs alone in any stage (a FIFO image, an LLM endpoint that never
answers) becomes an error row and the run goes on, instead of the stall check failing the whole run."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pyarrow as pa
import pytest

from vlclip_core import schema as S
from vlclip_core.stages.base import BatchStage


class ReadingStage(BatchStage):
    """Reads each row's file: a FIFO with no writer blocks its open() for ever."""

    name = "reading"
    inputs = (S.IMAGE_URI,)

    def new_outputs(self, n):
        return {"size": np.zeros(n, dtype=np.int64)}

    def process(self, batch, idx, out):
        for i in idx:
            with open(batch[S.IMAGE_URI][i], "rb") as fh:
                out["size"][i] = len(fh.read())


def test_a_row_that_blocks_past_its_deadline_becomes_an_error_row(tmp_path):
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"f{i}"))
        with open(paths[-1], "wb") as fh:
            fh.write(b"x" * (i + 1))
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    paths.insert(1, fifo)
    stage = ReadingStage()
    beats = []
    stage.set_deadlines(1.0, 0.5, lambda: beats.append(time.monotonic()))
    ids = np.array(["a", "FIFO", "b", "c"], dtype=object)
    batch = {S.ITEM_ID: ids, S.IMAGE_URI: np.array(paths, dtype=object)}
    started = time.monotonic()
    out = stage(batch)
    assert time.monotonic() - started < 10
    assert list(out[S.STATUS]) == ["ok", "error", "ok", "ok"]
    assert (out[S.ERROR_STAGE][1], out[S.ERROR_TYPE][1]) == ("reading", "deadline_exceeded")
    assert list(out["size"]) == [1, 0, 2, 3]
    assert len(beats) == 4  # one beat per row tried alone, so the stall check sees progress


def slow_for_one_item(messages):
    """Answers each agent step at once, except for the SLOWDRIP item: no byte for two minutes."""
    from llm_server_helpers import answer_each_step

    if any("SLOWDRIP" in m["content"] for m in messages):
        time.sleep(120)
    return answer_each_step(messages)


@pytest.mark.usefixtures("ray_local")
def test_a_fifo_image_and_a_silent_llm_endpoint_become_error_rows_and_the_run_goes_on(
    spark, make_config, sample_root, tmp_path
):
    from llm_server_helpers import FakeLLMServer

    from vlclip_core.run.audit import check_run
    from vlclip_core.run.job import run_job
    from vlclip_core.run.state import open_run
    from vlclip_core.tools.sample_catalog import read_catalog, write_catalog
    from vlclip_core.warehouse.tables import Tables

    table = read_catalog(str(sample_root / "catalog")).slice(0, 6)
    images = tmp_path / "images"
    images.mkdir()
    rows = table.to_pylist()
    for row in rows:
        row["image_uri"] = shutil.copy(row["image_uri"], images)
    os.mkfifo(images / "stuck.jpg")
    rows[1].update(item_id="FIFO", image_uri=str(images / "stuck.jpg"))
    rows[3].update(item_id="SLOW", title="SLOWDRIP " + rows[3]["title"])
    schema = pa.schema([f.with_nullable(True) for f in table.schema])
    catalog = write_catalog(pa.Table.from_pylist(rows, schema=schema), str(tmp_path / "cat"))
    with FakeLLMServer(responder=slow_for_one_item) as llm:
        config = make_config(
            catalog,
            tmp_path / "wh",
            f"images.local_root={images}",
            "models.llm.backend=openai",
            f"models.llm.base_url={llm.base_url}",
            "models.llm.model=fake-llm",
            "models.llm.retries=0",
            "models.llm.timeout_s=300",  # the endpoint's own read timeout is far away
            "ray.stall_timeout_s=30",  # the deadlines: a third of it
        )
        report = run_job(config, spark)
    tables = Tables(spark, config.warehouse)
    errors = {
        r.item_id: (r.stage, r.error_type)
        for r in tables.read("embedding_errors").where(f"run_id = '{report.run_id}'").collect()
    }
    # the FIFO is refused before it is opened (images/fetch.py reads regular files only); the drip-fed
    # LLM reply is what the per-item deadline cuts off
    assert errors == {"FIFO": ("decode", "not_a_file"), "SLOW": ("enrichment", "deadline_exceeded")}
    embedded = {r.item_id for r in tables.read("embeddings").collect()}
    assert embedded == {r["item_id"] for r in rows} - {"FIFO", "SLOW"}
    assert report.status == "succeeded"
    assert check_run(spark, tables, open_run(config.warehouse.staging(), report.run_id)) == []
