"""The shard writer: one Parquet part per (batch, shard) in the output schema, one summary row per shard."""

from __future__ import annotations

import math
import os

import numpy as np
import pyarrow.parquet as pq

from vlclip_core import schema as S
from vlclip_core.batch import object_values
from vlclip_core.pipeline.shard_writer import OUTPUT_SCHEMA, to_arrow, write_shard_parts

NAN4 = [math.nan] * 4


def batch():
    """Five rows of shards 3 and 7: one error row per shard, vectors missing on the error rows."""
    return {
        S.ITEM_ID: object_values(["a", "b", "c", "d", "e"]),
        S.SHARD_ID: np.array([3, 7, 3, 7, 3], dtype=np.int32),
        S.STATUS: object_values(["ok", "ok", "error", "error", "ok"]),
        S.ERROR_TYPE: object_values([None, None, "http_404", "bad_image", None]),
        S.GROUNDING_SOURCE: object_values(["model", "cache", None, None, "model"]),
        S.GROUNDING_BOX: np.array([[0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], NAN4, NAN4, [0, 0, 0.5, 0.5]]),
        S.EMBEDDING: np.array([[1.0, 0.0], [0.0, 1.0], [math.nan] * 2, [math.nan] * 2, [0.6, 0.8]]),
        S.LLM_CALLS: np.array([1, 0, math.nan, 2, 1]),
        S.STAGE_SECONDS_PREFIX + "decode": np.array([0.5, 0.25, 0.5, 0.25, 0.5]),
        "not_an_output": object_values(["x"] * 5),
    }


def test_parts_per_shard_hold_their_rows_in_the_output_schema(tmp_path):
    write_shard_parts(batch(), str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["shard_id=3", "shard_id=7"]
    parts = os.listdir(tmp_path / "shard_id=3")
    assert len(parts) == 1 and parts[0].startswith("part-") and parts[0].endswith(".parquet")
    table = pq.read_table(tmp_path / "shard_id=3" / parts[0])
    assert table.schema.equals(OUTPUT_SCHEMA)
    assert table.column(S.ITEM_ID).to_pylist() == ["a", "c", "e"]
    assert table.column(S.ERROR_TYPE).to_pylist() == [None, "http_404", None]
    float32 = [float(np.float32(v)) for v in (0.6, 0.8)]  # vectors are stored as list<float32>
    assert table.column(S.EMBEDDING).to_pylist() == [[1.0, 0.0], None, float32]
    assert table.column(S.GROUNDING_BOX).to_pylist()[1] is None
    assert table.column(S.LLM_CALLS).to_pylist() == [1, None, 1]
    assert table.column(S.TEXT_HASH).null_count == 3  # a column the batch lacks is written as nulls


def test_summary_rows_count_each_shard(tmp_path):
    summary = write_shard_parts(batch(), str(tmp_path))
    rows = [{k: v[i].item() for k, v in summary.items()} for i in range(len(summary["shard"]))]
    assert rows == [
        {
            "shard": 3,
            "rows": 3,
            "ok": 2,
            "errors": 1,
            "detector_items": 2,
            "llm_calls": 2,
            "sec_decode": 1.5,
            "sec_grounding": 0.0,
            "sec_enrichment": 0.0,
            "sec_clip": 0.0,
        },
        {
            "shard": 7,
            "rows": 2,
            "ok": 1,
            "errors": 1,
            "detector_items": 0,
            "llm_calls": 2,
            "sec_decode": 0.5,
            "sec_grounding": 0.0,
            "sec_enrichment": 0.0,
            "sec_clip": 0.0,
        },
    ]


def test_a_retried_batch_replaces_its_part_and_another_batch_adds_one(tmp_path):
    write_shard_parts(batch(), str(tmp_path))
    write_shard_parts(batch(), str(tmp_path))  # a retried writer task: the same items again
    assert len(os.listdir(tmp_path / "shard_id=7")) == 1
    assert pq.read_table(tmp_path / "shard_id=7").num_rows == 2
    other = batch()
    other[S.ITEM_ID] = object_values(["f", "g", "h", "i", "j"])
    write_shard_parts(other, str(tmp_path))
    assert len(os.listdir(tmp_path / "shard_id=7")) == 2
    assert pq.read_table(tmp_path / "shard_id=7").num_rows == 4


def test_to_arrow_of_rows_without_vectors():
    table = to_arrow({S.ITEM_ID: object_values(["a", "b"]), S.EMBEDDING: np.zeros((2, 0))}, 2)
    assert table.num_rows == 2 and table.column(S.EMBEDDING).to_pylist() == [None, None]
