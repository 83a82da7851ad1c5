"""The job's config sections as typed dataclasses, each validating its own values."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Optional, Tuple, Union

from vlclip_core import storage
from vlclip_core.config import identity
from vlclip_core.config.checks import (
    DTYPES,
    PRECISIONS,
    check_host_entries,
    check_prompt_template,
    check_run_id,
    fraction,
    one_of,
    positive,
)
from vlclip_core.errors import ConfigError
from vlclip_core.llm.verdict import VERDICT_FORMATS


@dataclass
class CatalogConfig:
    path: str = ""
    format: str = "auto"  # auto | delta | parquet
    table: Optional[str] = None  # metastore table name, instead of path
    filter: Optional[str] = None  # Spark SQL predicate, pushed down

    def validate(self) -> None:
        one_of("catalog.format", self.format, ("auto", "delta", "parquet"))


@dataclass
class WarehouseConfig:
    path: str = "warehouse"
    staging_dir: Optional[str] = None  # default <path>/_staging
    # Optional metastore table names; when unset, tables live at <path>/<name>.
    embeddings_table: Optional[str] = None
    errors_table: Optional[str] = None
    runs_table: Optional[str] = None
    # Delta table features, applied to new and existing tables. Deletion vectors make a MERGE update
    # mark rows instead of rewriting files, but some readers refuse such tables (README, "Reading the
    # output"); the change data feed lets jobs/export_index.py update its ANN indexes incrementally.
    deletion_vectors: bool = True
    change_data_feed: bool = True
    # auto: a lock file for local or mounted staging, a Delta lock table for object stores (s3a://...);
    # file | delta | none (none: the scheduler guarantees that runs never overlap)
    run_lock: str = "auto"
    # the Delta lock's lease: renewed every third of it while the run lives; a run that stops renewing
    # (killed, hung) loses the lock this long after its last renewal. Keep it well above clock skew.
    lock_lease_s: float = 600.0

    def validate(self) -> None:
        one_of("warehouse.run_lock", self.run_lock, ("auto", "file", "delta", "none"))
        positive("warehouse.lock_lease_s", self.lock_lease_s)
        if self.run_lock == "file" and not storage.is_local(self.staging()):
            raise ConfigError(
                f"warehouse.run_lock=file needs a local or mounted staging directory, got "
                f"{self.staging()!r}: use delta (or auto)"
            )

    def staging(self) -> str:
        return self.staging_dir or os.path.join(self.path, "_staging")


@dataclass
class IndexConfig:
    """The similar-items ANN indexes of jobs/export_index.py (FAISS, inner product).

    kind hnsw: a graph over the full vectors (4*dim + ~8*hnsw_m bytes per item: exact-ish, for up to a
    few million items); kind ivfpq: inverted lists of product-quantised codes (pq_m bytes + an 8-byte
    id per item), trained on a sample of train_size vectors: the kind for tens of millions of items.
    """

    path: Optional[str] = None  # default <warehouse.path>/_index; one directory per model_version
    kind: str = "hnsw"  # hnsw | ivfpq
    hnsw_m: int = 32  # graph degree
    ef_construction: int = 200
    ef_search: int = 128  # candidates per query: recall vs query time
    ivf_nlist: int = 4096  # inverted lists (fewer when the training sample is small: 39 points per list)
    pq_m: int = 64  # bytes per item code; must divide the embedding dimension
    pq_nbits: int = 8  # bits per sub-quantizer code
    nprobe: int = 32  # lists visited per query: recall vs query time
    train_size: int = 160_000  # vectors sampled from the table to train ivfpq (held in the driver)
    batch_size: int = 10_000  # vectors handed from Spark to the index per batch
    # an incremental update rebuilds the index from its live vectors once removed ones exceed this share
    max_removed_fraction: float = 0.2

    def validate(self) -> None:
        one_of("index.kind", self.kind, ("hnsw", "ivfpq"))
        for name in ("hnsw_m", "ef_construction", "ef_search", "ivf_nlist", "pq_m", "nprobe", "train_size",
                     "batch_size"):
            positive(f"index.{name}", getattr(self, name))
        if not 1 <= self.pq_nbits <= 16:
            raise ConfigError(f"index.pq_nbits must be in 1..16, got {self.pq_nbits!r}")
        fraction("index.max_removed_fraction", self.max_removed_fraction)

    def directory(self, warehouse: "WarehouseConfig") -> str:
        return self.path or warehouse.path.rstrip("/") + "/_index"


@dataclass
class FailedFractions:
    """Highest share of items that may fail at each stage (catalog: of the rows seen; the others and
    `any`: of the items selected) before the run breaches its thresholds."""

    catalog: float = 0.5
    decode: float = 0.5
    grounding: float = 0.5
    enrichment: float = 0.5
    clip: float = 0.5
    pipeline: float = 0.5  # batches that failed on every retry
    any: float = 0.5  # all stages together


@dataclass
class FallbackFractions:
    """Highest share of embedded items that may be ungrounded (whole image) or carry fallback text;
    `llm_error`: fallback text because the LLM failed (down, timing out), not because of the item."""

    grounding: float = 1.0
    enrichment: float = 1.0
    llm_error: float = 0.05


@dataclass
class ThresholdsConfig:
    """When a run's failures mean its output must not pass for a normal run (job.thresholds)."""

    max_failed: FailedFractions = field(default_factory=FailedFractions)
    max_fallback: FallbackFractions = field(default_factory=FallbackFractions)
    min_items: int = 10  # fewer items than this (seen for catalog, else selected): no verdict
    # fail: the run's embeddings are not merged (error rows and caches are), it is recorded as failed
    # and exits 1; its items are selected again next run. degraded: everything is merged, the run is
    # recorded as degraded and the job exits 3.
    on_breach: str = "fail"  # fail | degraded

    def validate(self) -> None:
        one_of("job.thresholds.on_breach", self.on_breach, ("fail", "degraded"))
        for group in ("max_failed", "max_fallback"):
            for f in dataclasses.fields(getattr(self, group)):
                fraction(f"job.thresholds.{group}.{f.name}", getattr(getattr(self, group), f.name))
        if self.min_items < 0:
            raise ConfigError(f"job.thresholds.min_items must be >= 0, got {self.min_items}")


@dataclass
class JobConfig:
    mode: str = "incremental"  # incremental | backfill
    shard_size: int = 1000
    removed_items: str = "keep"  # keep | delete
    # delete mode refuses to remove more than this share of the version's rows (an empty or truncated
    # catalog read must not wipe the table); 1.0 turns the guard off
    max_removed_fraction: float = 0.5
    run_id: Optional[str] = None  # resume this run; default: the last unfinished one
    resume: bool = True
    log_every_s: float = 10.0
    thresholds: ThresholdsConfig = field(default_factory=ThresholdsConfig)
    # failed_images rows whose last failure is older than this are deleted at commit (0: kept for ever)
    failed_images_retention_days: float = 30.0
    # Commit groups: finished shards are merged while the pipeline runs, once this many are done or
    # this many minutes have passed since the last group (0 turns a trigger off; both 0: one commit at
    # the end). The run's last shards are always the final group.
    commit_every_shards: int = 100
    commit_every_minutes: float = 30.0

    def validate(self) -> None:
        one_of("job.mode", self.mode, ("incremental", "backfill"))
        one_of("job.removed_items", self.removed_items, ("keep", "delete"))
        positive("job.shard_size", self.shard_size)
        for name in ("commit_every_shards", "commit_every_minutes"):
            if getattr(self, name) < 0:
                raise ConfigError(f"job.{name} must be >= 0 (0 turns it off), got {getattr(self, name)}")
        fraction("job.max_removed_fraction", self.max_removed_fraction)
        if self.failed_images_retention_days < 0:
            raise ConfigError(
                f"job.failed_images_retention_days must be >= 0, got {self.failed_images_retention_days}"
            )
        if self.run_id is not None:
            check_run_id(self.run_id, "job.run_id")
        self.thresholds.validate()


@dataclass
class SparkConfig:
    master: Optional[str] = "local[2]"  # None: leave it to spark-submit
    app_name: str = "vlclip-embed-catalog"
    conf: dict = field(default_factory=dict)


@dataclass
class RayConfig:
    address: str = "local"  # local | auto | ray://host:port
    num_cpus: Optional[float] = None  # only for address=local
    stall_timeout_s: float = 900.0  # no progress for this long ends the run
    max_batch_retries: int = 2  # Ray retries of a failed task or of a batch whose actor died
    max_failed_batches: int = 10  # batches that still fail become error rows; one more fails the run
    # Batches queued on one actor: more keeps a GPU fed, fewer means a crashing batch takes fewer
    # innocent batches (queued on the same actor) through their retries with it.
    max_tasks_in_flight_per_actor: int = 2
    # Items of batches that failed on every retry are run once more, one item per batch, so a
    # crashing item does not take its batch neighbours with it; only items that fail alone become
    # error rows (in that pass, max_failed_batches counts items).
    retry_failed_items: bool = True
    runtime_env: dict = field(default_factory=dict)
    # Start (or join) Ray while Spark writes the work set, once Spark has counted a non-empty
    # selection: a run that selects nothing still starts no Ray. Staging then runs in a worker thread
    # (Ray starts only from the main thread); false keeps it in the main thread (a profiler's view).
    start_during_staging: bool = True
    # Rows of one Ray Data block read from the staged shards. A task or an actor call takes whole
    # blocks, so blocks as large as a shard would leave one decode task and one actor of each pool on
    # it while the others idle. Unset: the decode stage's batch size.
    block_rows: Optional[int] = None

    def validate(self) -> None:
        if self.block_rows is not None:
            positive("ray.block_rows", self.block_rows)


AUTO = "auto"
LAYOUTS = ("auto", "split", "fused")
MODEL_STAGES = ("grounding", "enrichment", "clip")


@dataclass
class StageResources:
    batch_size: int = 16
    # Actors of the stage's pool (decode: parallel tasks). "auto": a Ray Data autoscaling pool from
    # min_actors up to max_actors (unset: as many as the cluster's CPUs/GPUs fit at num_cpus/num_gpus
    # each, beside the pipeline's CPU tasks), grown while the stage is the one its input waits on.
    num_actors: Union[int, str] = AUTO
    min_actors: int = 1
    max_actors: Optional[int] = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    num_threads: Optional[int] = None  # torch threads per actor; unset: the CPUs it holds (at least 1)
    impl: Optional[str] = None  # "module:Class" replacing the stage's class (a BatchStage subclass)
    # Deadlines: a batch still in the stage after batch_timeout_s is retried item by item, and an item
    # still there after item_timeout_s becomes an error row (deadline_exceeded); the run goes on.
    # Unset: a third of ray.stall_timeout_s; 0: none (only the stall check is left).
    batch_timeout_s: Optional[float] = None
    item_timeout_s: Optional[float] = None

    def validate(self, name: str) -> None:
        positive(f"stages.{name}.batch_size", self.batch_size)
        for key in ("batch_timeout_s", "item_timeout_s"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ConfigError(f"stages.{name}.{key} must be >= 0 (0: no deadline), got {value}")
        if self.num_actors != AUTO and (
            isinstance(self.num_actors, bool) or not isinstance(self.num_actors, int) or self.num_actors <= 0
        ):
            raise ConfigError(f"stages.{name}.num_actors must be > 0 or auto, got {self.num_actors!r}")
        positive(f"stages.{name}.min_actors", self.min_actors)
        if self.max_actors is not None and self.max_actors < self.min_actors:
            raise ConfigError(
                f"stages.{name}.max_actors must be >= min_actors ({self.min_actors}), got {self.max_actors}"
            )
        if self.num_threads is not None:
            positive(f"stages.{name}.num_threads", self.num_threads)
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ConfigError(
                f"stages.{name}: num_cpus/num_gpus must be >= 0, got {self.num_cpus}/{self.num_gpus}"
            )

    @property
    def threads(self) -> int:
        return self.num_threads or max(1, int(round(self.num_cpus)))


@dataclass
class StagesConfig:
    decode: StageResources = field(default_factory=lambda: StageResources(batch_size=32, num_cpus=0.25))
    grounding: StageResources = field(default_factory=StageResources)
    enrichment: StageResources = field(default_factory=StageResources)
    clip: StageResources = field(default_factory=StageResources)
    # split: one actor pool per model stage (GPU stages each get their own devices); fused: one pool
    # whose actors run grounding -> enrichment -> CLIP in turn, sized by `fused` (on a CPU-only
    # cluster a core runs a whole chain, with no hand-off between stages); auto: fused when no stage
    # asks for a GPU, the cluster has none and the LLM runs in the actors (not a service), else split.
    layout: str = AUTO
    fused: StageResources = field(default_factory=lambda: StageResources(batch_size=16, num_cpus=1.0))

    def validate(self) -> None:
        one_of("stages.layout", self.layout, LAYOUTS)
        for f in dataclasses.fields(self):
            if f.name != "layout":
                getattr(self, f.name).validate(f.name)

    def wants_gpus(self) -> bool:
        return any(getattr(self, name).num_gpus > 0 for name in MODEL_STAGES + ("fused",))


@dataclass
class ImageConfig:
    allowed_schemes: list = field(default_factory=lambda: ["file", "http", "https"])
    local_root: Optional[str] = None  # local paths must resolve under it when set
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 20.0
    max_bytes: int = 25_000_000
    max_pixels: int = 64_000_000
    retries: int = 2
    backoff_s: float = 0.5
    max_side: int = 800  # decoded images are downscaled to this longest side
    total_timeout_s: float = 60.0  # wall-clock cap on one HTTP download (a slow drip cannot stall a task)
    # An image that failed for good (HTTP 404/410, missing file) is not fetched again for this long:
    # its items are skipped (counted in the runs row) until then, or until their image_uri changes.
    retry_failed_after_hours: float = 168.0  # 0: fetch again every run
    # Image URLs are untrusted: loopback, link-local (cloud metadata), private, multicast and reserved
    # addresses are refused unless the URL's host (or host:port) is listed here...
    allowed_hosts: list = field(default_factory=list)
    # ...or, for the private ranges only (RFC 1918, fc00::/7, 100.64.0.0/10), this is true.
    allow_private_networks: bool = False
    max_redirects: int = 5  # each hop is checked like the first URL
    ca_bundle: Optional[str] = None  # CA certificates for https images (default: certifi's bundle)
    # Images of one decode batch fetched (and decoded) at once: a CDN's latency overlaps instead of
    # adding up row after row. 1: one after another.
    fetch_threads: int = 8

    IDENTITY: ClassVar[tuple] = ("max_side",)
    OUTSIDE_IDENTITY: ClassVar[Dict[str, str]] = {
        "allowed_schemes": "which items may be fetched, not what they become",
        "local_root": "which items may be fetched, not what they become",
        "connect_timeout_s": "pacing",
        "read_timeout_s": "pacing",
        "retries": "pacing",
        "backoff_s": "pacing",
        "total_timeout_s": "pacing",
        "max_bytes": "which items may be fetched, not what they become",
        "max_pixels": "which items may be decoded, not what they become",
        "retry_failed_after_hours": "when a failed image is fetched again",
        "allowed_hosts": "which items may be fetched, not what they become",
        "allow_private_networks": "which items may be fetched, not what they become",
        "max_redirects": "which items may be fetched, not what they become",
        "ca_bundle": "which image servers are trusted, not what their images become",
        "fetch_threads": "pacing",
    }

    def validate(self) -> None:
        positive("images.max_bytes", self.max_bytes)
        positive("images.total_timeout_s", self.total_timeout_s)
        positive("images.max_pixels", self.max_pixels)
        positive("images.max_side", self.max_side)
        positive("images.fetch_threads", self.fetch_threads)
        if self.retries < 0 or self.retry_failed_after_hours < 0 or self.max_redirects < 0:
            raise ConfigError(
                f"images.retries, retry_failed_after_hours and max_redirects must be >= 0, got "
                f"{self.retries}/{self.retry_failed_after_hours}/{self.max_redirects}"
            )
        check_host_entries("images.allowed_hosts", self.allowed_hosts)


@dataclass
class DetectorConfig:
    kind: str = "grounding_dino"  # grounding_dino | owlv2 | null (models/null.py: a derived box, no model)
    path: str = "IDEA-Research/grounding-dino-tiny"  # hub id or local directory
    prompt_template: str = "{product_type}."
    box_threshold: float = 0.25
    text_threshold: float = 0.25
    margin: float = 0.05  # crop margin, fraction of the box side
    min_box_frac: float = 0.02  # boxes smaller than this fraction of the image area are rejected
    dtype: str = "float32"  # float32 | float16 | bfloat16 (GPU)

    # The recipe identity: every field that changes an output is in IDENTITY, every other one in
    # OUTSIDE_IDENTITY with the reason (tests/test_config.py fails on a field that is in neither).
    IDENTITY: ClassVar[tuple] = (
        "kind",
        "path",
        "prompt_template",
        "box_threshold",
        "text_threshold",
        "margin",
        "min_box_frac",
        "dtype",
    )
    OUTSIDE_IDENTITY: ClassVar[Dict[str, str]] = {}

    def validate(self) -> None:
        one_of("models.detector.kind", self.kind, ("grounding_dino", "owlv2", "null"))
        one_of("models.detector.dtype", self.dtype, DTYPES)
        for name in ("box_threshold", "text_threshold", "margin", "min_box_frac"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"models.detector.{name} must be in [0, 1), got {value}")
        check_prompt_template(self.prompt_template)

    def identity(self) -> dict:
        return dict(identity.section_identity(self), weights=identity.weights_digest(self.path))


DEFAULT_STOP = ("\n\n",)  # a description is one paragraph: a blank line starts something else
MAX_STOP = 4  # the OpenAI API takes at most four stop sequences


@dataclass
class LLMConfig:
    backend: str = "transformers"  # transformers | openai | null (models/null.py: no model)
    path: str = ""  # transformers: hub id or local directory
    gguf_file: Optional[str] = None
    base_url: Optional[str] = None  # openai: e.g. http://vllm:8000/v1
    model: Optional[str] = None  # openai: served model name
    api_key_env: Optional[str] = None  # name of the environment variable holding the key
    prompt_dir: str = "conf/prompts"
    prompt_version: str = "v1"
    verdict_format: str = "json"  # json | yes_no: the form of the evaluate reply that the prompts ask for
    max_rounds: int = 1  # evaluate/refine rounds after the summary
    max_new_tokens: int = 96
    max_input_chars: int = 4000
    min_chars: int = 20
    max_chars: int = 600
    on_error: str = "fallback"  # fallback | error: what an LLM failure does to the item
    timeout_s: float = 60.0  # openai: wall-clock limit of one request (connect, wait, whole reply)
    retries: int = 2
    backoff_s: float = 1.0
    max_concurrency: int = 8
    max_reply_bytes: int = 1_000_000  # openai: a longer reply is an error, and not read further
    dtype: str = "float32"
    temperature: float = 0.0  # openai backend; the transformers backend always decodes greedily
    max_input_tokens: int = 2048  # transformers backend: longer prompts are cut in the middle
    repetition_penalty: float = 1.2  # transformers: > 1 lowers tokens the reply holds (not the prompt's)
    no_repeat_ngram_size: int = 4  # transformers: no token n-gram of this size twice in a reply; 0 = off
    frequency_penalty: float = 0.5  # openai: grows with each earlier occurrence of a token in the reply
    presence_penalty: float = 0.0  # openai: once a token occurred in the reply
    stop: List[str] = field(default_factory=lambda: list(DEFAULT_STOP))  # both: the reply ends before these

    # added after recipes were in use: left out of the identity at the value that gives the old outputs
    IDENTITY_ADDED: ClassVar[Dict[str, object]] = {"verdict_format": "json"}
    IDENTITY: ClassVar[tuple] = (
        "backend",
        "path",
        "gguf_file",
        "model",
        "prompt_version",
        "verdict_format",
        "max_rounds",
        "max_new_tokens",
        "max_input_chars",
        "min_chars",
        "max_chars",
        "dtype",
        "temperature",
        "max_input_tokens",
        "repetition_penalty",
        "no_repeat_ngram_size",
        "frequency_penalty",
        "presence_penalty",
        "stop",
    )
    OUTSIDE_IDENTITY: ClassVar[Dict[str, str]] = {
        "base_url": "where the model is served",
        "api_key_env": "credentials",
        "prompt_dir": "the prompt files enter the identity by content",
        "on_error": "what a failed item becomes; an item's output does not depend on it",
        "timeout_s": "pacing",
        "retries": "pacing",
        "backoff_s": "pacing",
        "max_concurrency": "pacing",
        "max_reply_bytes": "a bound on what is read from the server; a reply within it is used whole",
    }

    def validate(self) -> None:
        one_of("models.llm.backend", self.backend, ("transformers", "openai", "null"))
        one_of("models.llm.on_error", self.on_error, ("fallback", "error"))
        one_of("models.llm.dtype", self.dtype, DTYPES)
        one_of("models.llm.verdict_format", self.verdict_format, VERDICT_FORMATS)
        if self.backend == "openai" and not (self.base_url and self.model):
            raise ConfigError("models.llm.backend=openai needs models.llm.base_url and models.llm.model")
        if self.backend == "transformers" and not self.path:
            raise ConfigError("models.llm.backend=transformers needs models.llm.path")
        if self.min_chars >= self.max_chars:
            raise ConfigError(
                f"models.llm.min_chars ({self.min_chars}) must be < max_chars ({self.max_chars})"
            )
        if self.max_rounds < 0 or self.retries < 0 or self.temperature < 0:
            raise ConfigError(
                f"models.llm.max_rounds/retries/temperature must be >= 0, got "
                f"{self.max_rounds}/{self.retries}/{self.temperature}"
            )
        for name in (
            "max_concurrency",
            "max_new_tokens",
            "max_input_chars",
            "max_input_tokens",
            "timeout_s",
            "max_reply_bytes",
        ):
            positive(f"models.llm.{name}", getattr(self, name))
        self._validate_generation()
        self.prompt_digest()  # the prompt files exist and are valid: checked on the driver, before any work

    def _validate_generation(self) -> None:
        positive("models.llm.repetition_penalty", self.repetition_penalty)
        if self.no_repeat_ngram_size < 0:
            raise ConfigError(
                f"models.llm.no_repeat_ngram_size must be >= 0, got {self.no_repeat_ngram_size!r}"
            )
        for name in ("frequency_penalty", "presence_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                raise ConfigError(f"models.llm.{name} must be in [-2, 2], got {getattr(self, name)}")
        if len(self.stop) > MAX_STOP or not all(isinstance(s, str) and s for s in self.stop):
            raise ConfigError(
                f"models.llm.stop must be a list of at most {MAX_STOP} non-empty strings, got {self.stop!r}"
            )

    def identity(self) -> dict:
        weights = os.path.join(self.path, self.gguf_file) if self.path and self.gguf_file else self.path
        return dict(
            identity.section_identity(self),
            prompts=self.prompt_digest(),
            weights=identity.weights_digest(weights),
        )

    def prompt_digest(self) -> str:
        """Content hash of the prompt files of `prompt_version` (editing a prompt changes the recipe)."""
        return identity.prompt_digest(self)


@dataclass
class ClipConfig:
    model_name: str = "ViT-B-32"
    pretrained: Optional[str] = None  # open_clip tag, or a local checkpoint file
    config_dir: Optional[str] = None  # extra architecture JSONs (open_clip.add_model_config)
    image_weight: float = 0.5
    text_weight: float = 0.5
    precision: str = "fp32"  # fp32 | fp16 | bf16 (GPU)
    device: str = "auto"  # auto | cpu | cuda

    IDENTITY: ClassVar[tuple] = ("model_name", "pretrained", "image_weight", "text_weight", "precision")
    OUTSIDE_IDENTITY: ClassVar[Dict[str, str]] = {
        "config_dir": "the architecture JSON of model_name enters the identity by content",
        "device": "placement (cpu and cuda compute the same model)",
    }

    def validate(self) -> None:
        one_of("models.clip.precision", self.precision, tuple(PRECISIONS))
        if self.image_weight < 0 or self.text_weight < 0 or self.image_weight + self.text_weight == 0:
            raise ConfigError(
                f"models.clip weights must be >= 0 and not both 0, got {self.image_weight}/{self.text_weight}"
            )

    def identity(self) -> dict:
        return dict(
            identity.section_identity(self),
            architecture=identity.architecture_digest(self),
            checkpoint=identity.weights_digest(self.pretrained),
        )


@dataclass
class ModelsConfig:
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    device: str = "auto"  # auto | cpu | cuda, for every stage

    IDENTITY: ClassVar[tuple] = ()  # its sections enter model_version one by one
    OUTSIDE_IDENTITY: ClassVar[Dict[str, str]] = {
        "device": "placement",
        "detector": "section",
        "llm": "section",
        "clip": "section",
    }

    def validate(self) -> None:
        one_of("models.device", self.device, ("auto", "cpu", "cuda"))
        self.detector.validate()
        self.llm.validate()
        self.clip.validate()


@dataclass
class VlclipConfig:
    profile: str = "custom"
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    warehouse: WarehouseConfig = field(default_factory=WarehouseConfig)
    job: JobConfig = field(default_factory=JobConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
    images: ImageConfig = field(default_factory=ImageConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    index: IndexConfig = field(default_factory=IndexConfig)

    def validate(self) -> "VlclipConfig":
        if not (self.catalog.path or self.catalog.table):
            raise ConfigError("catalog.path (or catalog.table) is required")
        for section in (
            self.catalog,
            self.warehouse,
            self.job,
            self.ray,
            self.stages,
            self.images,
            self.models,
            self.index,
        ):
            section.validate()
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def stage_deadlines(self, name: str) -> Tuple[float, float]:
        """(batch, item) deadline of a stage in seconds, 0 for none; unset: a third of the stall timeout,
        so that a stuck item becomes an error row before the stall check ends the run."""
        res, default = getattr(self.stages, name), self.ray.stall_timeout_s / 3
        return tuple(default if v is None else v for v in (res.batch_timeout_s, res.item_timeout_s))

    @property
    def model_version(self) -> str:
        """Identity of the whole embedding recipe (config/identity.py); recipes never mix."""
        return identity.model_version(self)

    @property
    def config_hash(self) -> str:
        return identity.digest(self.to_dict())[:16]
