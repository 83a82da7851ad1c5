"""Column names and table schemas, declared once for Spark, Ray batches and the Delta tables."""

from __future__ import annotations

# --- the user's catalog -------------------------------------------------------------------
ITEM_ID = "item_id"
TITLE = "title"
DESCRIPTION = "description"
PRODUCT_TYPE = "product_type"
ATTRIBUTES = "attributes"
IMAGE_URI = "image_uri"

REQUIRED_CATALOG_COLUMNS = {ITEM_ID: "string", TITLE: "string", IMAGE_URI: "string"}
OPTIONAL_CATALOG_COLUMNS = {DESCRIPTION: "string", PRODUCT_TYPE: "string", ATTRIBUTES: "map<string,string>"}

# --- the staged work set (Spark -> Ray), one Parquet directory per shard --------------------
SHARD_ID = "shard_id"
ATTRIBUTES_JSON = "attributes_json"  # maps cross the boundary as sorted JSON objects
CONTENT_HASH = "content_hash"
TEXT_HASH = "text_hash"  # hash of the texts that feed the LLM + the LLM identity
CACHED_IMAGE_SHA = "cached_image_sha"  # grounding cache candidate for this image_uri
CACHED_PROMPT = "cached_prompt"  # the prompt the cached box was found with
CACHED_BOX = "cached_box"
CACHED_SCORE = "cached_score"
CACHED_GROUNDED = "cached_grounded"
CACHED_GROUNDING_REASON = "cached_grounding_reason"
CACHED_TEXT = "cached_text"  # enrichment cache hit
CACHED_ENRICHMENT_STATUS = "cached_enrichment_status"
CACHED_ENRICHMENT_REASON = "cached_enrichment_reason"

WORK_COLUMNS = (
    ITEM_ID,
    SHARD_ID,
    TITLE,
    DESCRIPTION,
    PRODUCT_TYPE,
    ATTRIBUTES_JSON,
    IMAGE_URI,
    CONTENT_HASH,
    TEXT_HASH,
    CACHED_IMAGE_SHA,
    CACHED_PROMPT,
    CACHED_BOX,
    CACHED_SCORE,
    CACHED_GROUNDED,
    CACHED_GROUNDING_REASON,
    CACHED_TEXT,
    CACHED_ENRICHMENT_STATUS,
    CACHED_ENRICHMENT_REASON,
)

# --- columns the Ray stages add --------------------------------------------------------------
STATUS = "status"  # ok | error
STATUS_OK = "ok"
STATUS_ERROR = "error"
ERROR_STAGE = "error_stage"
ERROR_TYPE = "error_type"
ERROR_MESSAGE = "error_message"
IMAGE_SHA = "image_sha"  # sha256 of the fetched image bytes
IMAGE_RGB = "image_rgb"  # raw uint8 RGB bytes, row-major, of shape IMAGE_HW
IMAGE_HW = "image_hw"  # (height, width)
CROP_RGB = "crop_rgb"
CROP_HW = "crop_hw"
GROUNDING_BOX = "grounding_box"  # normalised x0, y0, x1, y1
GROUNDING_SCORE = "grounding_score"
GROUNDED = "grounded"
GROUNDING_REASON = "grounding_reason"
GROUNDING_SOURCE = "grounding_source"  # model | cache
GROUNDING_PROMPT = "grounding_prompt"  # the detector's text prompt for this item
ENRICHED_TEXT = "enriched_text"
ENRICHMENT_STATUS = "enrichment_status"  # ok | refined | fallback
ENRICHMENT_REASON = "enrichment_reason"
ENRICHMENT_SOURCE = "enrichment_source"  # model | cache
LLM_CALLS = "llm_calls"  # LLM requests made for this row (0 on a cache hit)
IMAGE_EMBEDDING = "image_embedding"
TEXT_EMBEDDING = "text_embedding"
EMBEDDING = "embedding"
SOURCE_MODEL = "model"
SOURCE_CACHE = "cache"
STAGE_SECONDS_PREFIX = "sec_"  # sec_<stage>: this row's share of its batch's wall time

STAGE_NAMES = ("decode", "grounding", "enrichment", "clip")

# --- Delta tables --------------------------------------------------------------------------
MODEL_VERSION = "model_version"
RUN_ID = "run_id"
UPDATED_AT = "updated_at"
RUN_STARTED_AT = "run_started_at"  # when the writing run started: a row is never overwritten by an older run
NEEDS_RERUN = "needs_rerun"  # embeddings: provisional (text fell back because the LLM failed): reselected

EMBEDDINGS_DDL = """
item_id STRING NOT NULL, model_version STRING NOT NULL, content_hash STRING NOT NULL,
image_embedding ARRAY<FLOAT>, text_embedding ARRAY<FLOAT>, embedding ARRAY<FLOAT>, embedding_dim INT,
enriched_text STRING, enrichment_status STRING, grounding_box ARRAY<FLOAT>, grounding_score FLOAT,
grounded BOOLEAN, product_type STRING, run_id STRING, updated_at TIMESTAMP, needs_rerun BOOLEAN,
run_started_at TIMESTAMP
"""

ERRORS_DDL = """
item_id STRING, run_id STRING NOT NULL, model_version STRING, stage STRING, error_type STRING,
message STRING, occurred_at TIMESTAMP
"""

RUNS_DDL = """
run_id STRING NOT NULL, mode STRING, status STRING, started_at TIMESTAMP, finished_at TIMESTAMP,
items_seen BIGINT, items_invalid BIGINT, items_selected BIGINT, items_embedded BIGINT, items_failed BIGINT,
items_removed BIGINT, items_skipped BIGINT, detector_calls BIGINT, llm_calls BIGINT,
phase_seconds MAP<STRING,DOUBLE>, stage_seconds MAP<STRING,DOUBLE>, stage_items_per_s MAP<STRING,DOUBLE>,
error_counts MAP<STRING,BIGINT>, outcome_counts MAP<STRING,BIGINT>,
config_hash STRING, model_version STRING, message STRING, run_started_at TIMESTAMP
"""

GROUNDING_CACHE_DDL = """
image_uri STRING, image_sha STRING NOT NULL, detector_id STRING NOT NULL, prompt STRING NOT NULL,
box ARRAY<FLOAT>, score FLOAT, grounded BOOLEAN, reason STRING, created_at TIMESTAMP
"""

ENRICHMENT_CACHE_DDL = """
text_hash STRING NOT NULL, enriched_text STRING, status STRING, reason STRING, created_at TIMESTAMP
"""

# Images that failed for good (HTTP 404/410, missing file), so they are not fetched every run.
FAILED_IMAGES_DDL = """
image_uri STRING NOT NULL, error_type STRING, message STRING, failures BIGINT, first_failed_at TIMESTAMP,
last_failed_at TIMESTAMP, run_id STRING
"""
PERMANENT_FETCH_ERRORS = ("http_404", "http_410", "missing_file", "not_a_file")

TRAINING_RUNS_DDL = """
run_id STRING NOT NULL, status STRING, started_at TIMESTAMP, finished_at TIMESTAMP,
data_table STRING, data_version BIGINT, data_model_version STRING, dataset_id STRING, ablation STRING,
train_items BIGINT, eval_items BIGINT, failed_items BIGINT, model_name STRING, init_checkpoint STRING,
output_checkpoint STRING, output_model_version STRING, hyper_parameters MAP<STRING,STRING>,
steps BIGINT, resumed_from_step BIGINT, losses ARRAY<FLOAT>, final_loss FLOAT, pairs_per_s DOUBLE,
config_hash STRING, message STRING
"""

EVALUATIONS_DDL = """
model_version STRING NOT NULL, eval_id STRING NOT NULL, ablation STRING NOT NULL, task STRING NOT NULL,
product_type STRING NOT NULL, checkpoint STRING, data_version BIGINT, data_model_version STRING,
queries BIGINT, gallery BIGINT, hits_at_1 DOUBLE, hits_at_5 DOUBLE, hits_at_10 DOUBLE, mrr DOUBLE,
ndcg_at_10 DOUBLE, evaluated_at TIMESTAMP, gallery_cap BIGINT, held_out_items BIGINT
"""
EVAL_KEY = ("model_version", "eval_id", "ablation", "task", "product_type")
ALL_PRODUCT_TYPES = "__all__"  # evaluations.product_type of the overall row

# Written by the training and evaluation jobs only: the embedding job creates every table in TABLES.
TRAINING_TABLES = {
    "training_runs": TRAINING_RUNS_DDL,
    "evaluations": EVALUATIONS_DDL,
}

TABLES = {
    "embeddings": EMBEDDINGS_DDL,
    "embedding_errors": ERRORS_DDL,
    "runs": RUNS_DDL,
    "grounding_cache": GROUNDING_CACHE_DDL,
    "enrichment_cache": ENRICHMENT_CACHE_DDL,
    "failed_images": FAILED_IMAGES_DDL,
}
