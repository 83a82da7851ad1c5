"""Each Ray Train worker reads its own share of the pairs: disjoint, complete, as a split of all pairs."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from vlclip_core.train.loop import read_share
from vlclip_core.train.pairs import read_pairs


def test_worker_shares_are_disjoint_complete_and_follow_the_item_order(tmp_path):
    n = 47
    ids = [f"SKU-{(i * 31) % n:03d}" for i in range(n)]  # written out of order, over two files
    rows = {
        "item_id": ids,
        "split": ["train" if i % 5 else "eval" for i in range(n)],
        "error": [None if i % 7 else "no image" for i in range(n)],
        "image_png": [f"png-{i}".encode() for i in ids],
        "text": [f"text of {i}" for i in ids],
    }
    table = pa.table(rows)
    pq.write_table(table.slice(0, 20), str(tmp_path / "part-0.parquet"))
    pq.write_table(table.slice(20), str(tmp_path / "part-1.parquet"))
    everything = read_pairs(str(tmp_path), "train")
    world = 3
    shares = [read_share(str(tmp_path), "train", rank, world) for rank in range(world)]
    for rank, share in enumerate(shares):
        assert share.column_names == ["item_id", "image_png", "text"]
        assert share["item_id"].to_pylist() == everything["item_id"].to_pylist()[rank::world]
        assert share["image_png"].to_pylist() == everything["image_png"].to_pylist()[rank::world]
    seen = [i for share in shares for i in share["item_id"].to_pylist()]
    assert sorted(seen) == everything["item_id"].to_pylist() and len(seen) == len(set(seen))
    assert 0 < len(seen) < n  # eval rows and failed rows are nobody's
