"""Ray Train workers stream their own equal share of the train pairs from Ray Data, epoch after epoch."""

from __future__ import annotations

import io
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vlclip_core.config import ConfigError
from vlclip_core.train.loop import PairStream, steps_per_epoch, train_dataset
from vlclip_core.train.pairs import read_pairs

pytestmark = pytest.mark.usefixtures("ray_local")
N, WORLD, BATCH = 47, 3, 4


def _png(value: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 3), (value, 0, 0)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    ids = [f"SKU-{(i * 31) % N:03d}" for i in range(N)]  # written out of order, over two files
    rows = {
        "item_id": ids,
        "split": ["train" if i % 5 else "eval" for i in range(N)],
        "error": [None if i % 7 else "no image" for i in range(N)],
        "image_png": [_png(i) for i in range(N)],
        "text": ids,  # the text names the row, so a batch says which rows it holds
    }
    table = pa.table(rows)
    pq.write_table(table.slice(0, 20), str(root / "part-0.parquet"))
    pq.write_table(table.slice(20), str(root / "part-1.parquet"))
    return str(root)


def _stream_all(pairs: str, start: int, epochs: int):
    """Each worker's list of batches (lists of item ids), the workers consuming their splits side by side."""
    good = read_pairs(pairs, "train")["item_id"].to_pylist()
    per_epoch = steps_per_epoch(len(good), WORLD, BATCH)
    splits = train_dataset(pairs).streaming_split(WORLD, equal=True)
    seen = [[] for _ in range(WORLD)]
    wanted = epochs * per_epoch - start % per_epoch

    def consume(rank: int) -> None:
        stream = PairStream(splits[rank], per_epoch, tokenizer=list, preprocess=len, rank=rank)
        for _, (epoch, pixels, texts) in zip(range(wanted), stream.batches(start, BATCH, seed=3)):
            assert pixels == BATCH  # the preprocess saw BATCH decoded images
            seen[rank].append((epoch, texts))

    threads = [threading.Thread(target=consume, args=(rank,)) for rank in range(WORLD)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return good, per_epoch, seen


def test_each_epoch_gives_every_worker_disjoint_batches_of_good_train_pairs(pairs):
    good, per_epoch, seen = _stream_all(pairs, start=0, epochs=2)
    assert 0 < len(good) < N  # eval rows and failed rows are nobody's
    for worker in seen:
        assert [epoch for epoch, _ in worker] == [0] * per_epoch + [1] * per_epoch
    for epoch in (0, 1):
        rows = [i for worker in seen for e, batch in worker if e == epoch for i in batch]
        assert len(rows) == WORLD * per_epoch * BATCH and len(set(rows)) == len(rows)  # nobody's row twice
        assert set(rows) <= set(good)
    first, second = ([b for e, b in seen[0] if e == epoch] for epoch in (0, 1))
    assert first != second  # each epoch is reshuffled


def test_a_resumed_worker_finishes_its_epoch_then_starts_the_next(pairs):
    per_epoch = steps_per_epoch(read_pairs(pairs, "train").num_rows, WORLD, BATCH)
    _, _, seen = _stream_all(pairs, start=per_epoch + 1, epochs=2)
    # resumed at step per_epoch + 1: the rest of epoch 1 (per_epoch - 1 batches), then all of epoch 2
    for worker in seen:
        assert [epoch for epoch, _ in worker] == [1] * (per_epoch - 1) + [2] * per_epoch


def test_a_batch_larger_than_a_workers_share_is_a_config_error():
    with pytest.raises(ConfigError, match="larger than a worker's 3 train pairs"):
        steps_per_epoch(10, 3, 4)
    assert steps_per_epoch(25, 3, 4) == 2


def test_a_split_shorter_than_the_manifest_says_fails_instead_of_looping(pairs):
    per_epoch = steps_per_epoch(read_pairs(pairs, "train").num_rows, 1, BATCH)
    whole = train_dataset(pairs).iterator()
    stream = PairStream(whole, per_epoch + 1, tokenizer=list, preprocess=len, rank=0)
    with pytest.raises(RuntimeError, match=f"ended after {per_epoch} of {per_epoch + 1} batches"):
        list(stream.batches(0, BATCH, seed=3))
