"""Retrieval evaluation of one CLIP checkpoint on the held-out pairs: text->image and image->image,
overall and per product_type, MERGEd into the evaluations table keyed by model_version.

Relevance: text->image, the query item's own image among all held-out images (one relevant item);
image->image, the other held-out items of the query's product_type (the query itself is excluded from
the gallery; queries without a product_type or without another item of their type are skipped).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import numpy as np

from vlclip_core import schema as S
from vlclip_core import storage
from vlclip_core.config import VlclipConfig, load_config
from vlclip_core.models.select import build_clip
from vlclip_core.run.state import utcnow
from vlclip_core.train.config import EvalConfig, TrainJobConfig
from vlclip_core.train.metrics import block_per_query, summarise
from vlclip_core.train.pairs import ERROR, IMAGE_PNG, SPLIT, TEXT, decode_png, prepare_pairs
from vlclip_core.train.records import write_evaluations
from vlclip_core.warehouse.spark_session import get_spark
from vlclip_core.warehouse.tables import Tables

if TYPE_CHECKING:  # the null profile evaluates without torch
    from vlclip_core.models.clip import ClipEncoder

log = logging.getLogger(__name__)

TEXT_TO_IMAGE = "text_to_image"
IMAGE_TO_IMAGE = "image_to_image"
QUERY_BLOCK = 1024  # queries scored at once at most
BLOCK_ELEMENTS = 1 << 24  # (queries x gallery) scores of one block: 64 MiB of float32, whatever the gallery
GALLERY_SALT = "vlclip-eval-gallery-v1"
METRIC_COLUMNS = ("hits_at_1", "hits_at_5", "hits_at_10", "mrr", "ndcg_at_10")


@dataclass
class EvaluationReport:
    """The rows one evaluation wrote (one per task and product_type, plus the overall rows)."""

    model_version: str
    checkpoint: Optional[str]
    eval_id: str
    ablation: str
    rows: List[dict] = field(default_factory=list)

    def overall(self, task: str) -> dict:
        return next(r for r in self.rows if r["task"] == task and r[S.PRODUCT_TYPE] == S.ALL_PRODUCT_TYPES)


def run_evaluation(cfg: TrainJobConfig, checkpoint: Optional[str] = None, spark=None) -> EvaluationReport:
    """Evaluate `checkpoint` (default: the embedding profile's models.clip.pretrained) and write the rows."""
    embed = evaluated_config(cfg, checkpoint)
    spark = spark or get_spark(embed.spark)
    tables = Tables(spark, embed.warehouse)
    dataset = prepare_pairs(spark, cfg, embed)
    selected, held_out = gallery_ids(dataset.path, cfg.evaluation)
    encoder = build_clip(embed.models.clip, embed.models.device)
    images, texts, types = encode_gallery(encoder, dataset.path, selected, cfg.evaluation.batch_size)
    report = EvaluationReport(
        embed.model_version,
        embed.models.clip.pretrained,
        f"{dataset.dataset_id}:{cfg.evaluation.split}",
        dataset.ablation,
    )
    common = {
        S.MODEL_VERSION: report.model_version,
        "eval_id": report.eval_id,
        "ablation": report.ablation,
        "checkpoint": report.checkpoint,
        "data_version": dataset.data_version,
        "data_model_version": dataset.data_model_version,
        "evaluated_at": utcnow(),
        "gallery_cap": cfg.evaluation.max_gallery,
        "held_out_items": held_out,
    }
    report.rows = [{**common, **row} for row in task_rows(images, texts, types)]
    write_evaluations(tables, report.rows)
    log.info(
        "evaluated %s on %s: %s",
        report.model_version,
        report.eval_id,
        {r["task"]: round(r["mrr"], 4) for r in report.rows if r[S.PRODUCT_TYPE] == S.ALL_PRODUCT_TYPES},
    )
    return report


def evaluated_config(cfg: TrainJobConfig, checkpoint: Optional[str]) -> VlclipConfig:
    if not checkpoint:
        return cfg.embed()
    return load_config(
        cfg.embed_profile, tuple(cfg.embed_overrides) + (f"models.clip.pretrained={checkpoint}",)
    )


def gallery_ids(path: str, evaluation: EvalConfig) -> Tuple[List[str], int]:
    """(item_ids evaluated, sorted; items of the split): all good pairs of the split, or the
    evaluation.max_gallery of them with the lowest hash of item_id (the same items on every rerun)."""
    import pyarrow.compute as pc

    table = _pairs_dataset(path).to_table(columns=[S.ITEM_ID, SPLIT, ERROR])
    keep = pc.and_(pc.is_null(table[ERROR]), pc.equal(table[SPLIT], evaluation.split))
    ids = table.filter(keep).column(S.ITEM_ID).to_pylist()
    cap = evaluation.max_gallery
    if cap is not None and len(ids) > cap:
        ids = sorted(ids, key=_gallery_hash)
        log.info("evaluation gallery capped at %d of %d held-out items", cap, len(ids))
        return sorted(ids[:cap]), len(ids)
    return sorted(ids), len(ids)


def encode_gallery(encoder: "ClipEncoder", path: str, item_ids: List[str], batch_size: int):
    """(images, texts, product_types) of `item_ids`, in item_id order, read and encoded batch by batch
    (only the embeddings are held, never the stored crops of the whole split)."""
    import pyarrow.compute as pc

    batches = _pairs_dataset(path).to_batches(
        columns=[S.ITEM_ID, IMAGE_PNG, TEXT, S.PRODUCT_TYPE],
        filter=pc.field(S.ITEM_ID).isin(item_ids),
        batch_size=batch_size,
    )
    ids, image_parts, text_parts, types = [], [], [], []
    for batch in batches:
        if not batch.num_rows:
            continue
        pngs = batch.column(IMAGE_PNG).to_pylist()
        image_parts.append(encoder.encode_images([decode_png(b) for b in pngs]))
        text_parts.append(encoder.encode_texts(batch.column(TEXT).to_pylist()))
        ids.extend(batch.column(S.ITEM_ID).to_pylist())
        types.extend(batch.column(S.PRODUCT_TYPE).to_pylist())
    if not ids:
        raise ValueError(f"no good pair to evaluate in {path}")
    order = np.argsort(np.array(ids, dtype=object), kind="stable")
    types_array = np.array(types, dtype=object)[order]
    return np.concatenate(image_parts)[order], np.concatenate(text_parts)[order], types_array


def _gallery_hash(item_id: str) -> bytes:
    return hashlib.blake2b(f"{GALLERY_SALT}{item_id}".encode("utf-8"), digest_size=8).digest()


def _pairs_dataset(path: str):
    import pyarrow.dataset as pads

    fs, root = storage.resolve(path)
    return pads.dataset(root, filesystem=fs, format="parquet")


def task_rows(images: np.ndarray, texts: np.ndarray, types: np.ndarray) -> List[dict]:
    """Metric rows of both tasks: overall and per product_type."""
    t2i, i2i = text_to_image(images, texts), image_to_image(images, types)
    return summary_rows(TEXT_TO_IMAGE, t2i, types[t2i["query"]], len(images)) + summary_rows(
        IMAGE_TO_IMAGE, i2i, types[i2i["query"]], len(images) - 1
    )


def block_rows(gallery: int) -> int:
    """Queries per block, so that a block's (queries x gallery) scores stay within BLOCK_ELEMENTS."""
    return max(1, min(QUERY_BLOCK, BLOCK_ELEMENTS // max(gallery, 1)))


def text_to_image(images: np.ndarray, texts: np.ndarray) -> Dict[str, np.ndarray]:
    """Each text's relevant item is its own item's image."""
    n = len(images)

    def block(rows: np.ndarray):
        relevant = np.zeros((len(rows), n), dtype=bool)
        relevant[np.arange(len(rows)), rows] = True
        return texts[rows] @ images.T, relevant

    return scored(n, block)


def type_codes(types: np.ndarray) -> np.ndarray:
    """An integer per product_type, -1 for none (None, NaN or empty)."""
    known = np.array([t is not None and t == t and str(t) != "" for t in types], dtype=bool)
    codes = np.full(len(types), -1, dtype=np.int64)
    if known.any():
        codes[known] = np.unique(np.array([str(t) for t in types[known]]), return_inverse=True)[1]
    return codes


def image_to_image(images: np.ndarray, types: np.ndarray) -> Dict[str, np.ndarray]:
    """Each image's relevant items: the other items of its product_type (itself excluded from the gallery)."""
    codes = type_codes(types)
    sizes = np.bincount(codes[codes >= 0], minlength=1)
    queries = np.flatnonzero((codes >= 0) & (sizes[np.maximum(codes, 0)] >= 2))

    def block(rows: np.ndarray):
        scores = images[rows] @ images.T
        scores[np.arange(len(rows)), rows] = -np.inf  # the query itself ranks last and is not relevant
        relevant = codes[rows][:, None] == codes[None, :]
        relevant[np.arange(len(rows)), rows] = False
        return scores, relevant

    return scored(len(images), block, queries)


def scored(n: int, block, queries: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """Per-query first_rank and ndcg over `queries` (default: all n), block_rows(n) queries at a time."""
    queries = np.arange(n) if queries is None else queries
    step = block_rows(n)
    parts = [block_per_query(*block(queries[i: i + step])) for i in range(0, len(queries), step)]
    out = {
        key: np.concatenate([p[key] for p in parts]) if parts else np.zeros(0)
        for key in ("first_rank", "ndcg")
    }
    out["query"] = queries
    return out


def summary_rows(
    task: str, values: Dict[str, np.ndarray], query_types: np.ndarray, gallery: int
) -> List[dict]:
    if not len(values["query"]):
        log.warning("%s: no query has a relevant item; no rows", task)
        return []
    groups = {S.ALL_PRODUCT_TYPES: np.ones(len(query_types), dtype=bool)}
    groups.update({str(t): query_types == t for t in sorted({t for t in query_types if t is not None})})
    return [
        {
            "task": task,
            S.PRODUCT_TYPE: name,
            "gallery": gallery,
            **summarise(values["first_rank"][mask], values["ndcg"][mask]),
        }
        for name, mask in groups.items()
    ]


def format_comparison(reports: Dict[str, EvaluationReport]) -> str:
    """A plain-text table of the overall metrics of several evaluations (label -> report)."""
    header = f"{'model':<12} {'task':<15} {'queries':>7} " + " ".join(f"{c:>10}" for c in METRIC_COLUMNS)
    lines = [header, "-" * len(header)]
    for label, report in reports.items():
        for task in (TEXT_TO_IMAGE, IMAGE_TO_IMAGE):
            row = report.overall(task)
            lines.append(
                f"{label:<12} {task:<15} {row['queries']:>7} "
                + " ".join(f"{row[c]:>10.4f}" for c in METRIC_COLUMNS)
            )
    return "\n".join(lines)
