"""Typed configuration of the training and evaluation jobs: YAML profiles, `key=value` overrides, checks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Tuple

from vlclip_core.config import ConfigError, VlclipConfig, apply_override, build, load_config, read_profile
from vlclip_core.config.checks import positive

ABLATIONS = ("none", "no_grounding", "no_enrichment", "no_grounding_no_enrichment")
EMBED_PREFIX = "embed."


@dataclass
class DataConfig:
    """Which embeddings rows become training pairs, and how the held-out split is drawn."""

    model_version: Optional[str] = None  # embeddings rows to learn from; default: the newest succeeded run's
    ablation: str = "none"  # none | no_grounding (whole image) | no_enrichment (cleaned catalog text) | both
    eval_pct: int = 20  # held-out share: xxhash64(split_salt + item_id) mod 100 < eval_pct
    split_salt: str = "vlclip-split-v1"
    crop_margin: float = 0.05  # as models.detector.margin of the embedding run
    max_side: int = 224  # stored crops are downscaled to this longest side (PNG)
    min_train_items: int = 8

    def validate(self) -> None:
        if self.ablation not in ABLATIONS:
            raise ConfigError(f"data.ablation must be one of {', '.join(ABLATIONS)}; got {self.ablation!r}")
        if not 0 < self.eval_pct < 100:
            raise ConfigError(f"data.eval_pct must be in 1..99, got {self.eval_pct}")
        if not 0.0 <= self.crop_margin < 1.0:
            raise ConfigError(f"data.crop_margin must be in [0, 1), got {self.crop_margin}")
        positive("data.max_side", self.max_side)
        positive("data.min_train_items", self.min_train_items)

    @property
    def grounded(self) -> bool:
        return "no_grounding" not in self.ablation

    @property
    def enriched(self) -> bool:
        return "no_enrichment" not in self.ablation


@dataclass
class TrainConfig:
    """Optimisation, checkpointing and Ray Train resources of one fine-tuning run."""

    steps: int = 1000
    batch_size: int = 64  # per worker; the loss sees num_workers x batch_size pairs (features gathered)
    lr: float = 5e-5
    weight_decay: float = 0.1
    warmup_steps: int = 50
    grad_clip_norm: float = 1.0  # 0: no clipping
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    seed: int = 0
    num_workers: int = 1  # Ray Train workers: one per GPU
    use_gpu: bool = False
    cpus_per_worker: float = 1.0  # fractional on small machines
    torch_threads: int = 0  # 0: max(1, int(cpus_per_worker))
    precision: str = "fp32"  # fp32 | bf16 (autocast, GPU)
    max_failures: int = 0  # Ray Train restarts of a failed worker group (from the latest checkpoint)
    output_dir: str = "training"  # datasets/<id>/ (pairs) and runs/<run_id>/ (Ray Train storage, model)
    run_id: Optional[str] = None  # default: derived from the data and hyper-parameters (a rerun resumes)

    def validate(self) -> None:
        for name in (
            "steps",
            "batch_size",
            "lr",
            "checkpoint_every",
            "keep_checkpoints",
            "num_workers",
            "cpus_per_worker",
        ):
            positive(f"train.{name}", getattr(self, name))
        if self.batch_size < 2:
            raise ConfigError(f"train.batch_size must be >= 2 (contrastive loss), got {self.batch_size}")
        for name in ("weight_decay", "warmup_steps", "grad_clip_norm", "torch_threads", "max_failures"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"train.precision must be one of fp32, bf16; got {self.precision!r}")

    def hyper_parameters(self) -> dict:
        keys = (
            "steps",
            "batch_size",
            "lr",
            "weight_decay",
            "warmup_steps",
            "grad_clip_norm",
            "seed",
            "num_workers",
            "precision",
        )
        return {k: getattr(self, k) for k in keys}

    def threads(self) -> int:
        return self.torch_threads or max(1, int(self.cpus_per_worker))


@dataclass
class EvalConfig:
    """Retrieval evaluation on the held-out split."""

    batch_size: int = 64
    split: str = "eval"  # eval (held-out) | train (a sanity check of memorisation)
    # items scored against each other at most (a seeded hash sample; the cost is gallery^2 dot products);
    # null: the whole split. Recorded in each evaluations row as gallery_cap, beside held_out_items.
    max_gallery: Optional[int] = 200_000

    def validate(self) -> None:
        positive("evaluation.batch_size", self.batch_size)
        if self.max_gallery is not None and self.max_gallery < 2:
            raise ConfigError(f"evaluation.max_gallery must be >= 2 or null, got {self.max_gallery!r}")
        if self.split not in ("eval", "train"):
            raise ConfigError(f"evaluation.split must be one of eval, train; got {self.split!r}")


@dataclass
class TrainJobConfig:
    """The training/evaluation profile; `embed_profile` (+ `embed_overrides`) is the embedding job whose
    warehouse, catalog, image fetching, Spark, Ray and starting CLIP checkpoint it uses."""

    profile: str = "custom"
    embed_profile: str = "conf/tiny.yaml"
    embed_overrides: list = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> "TrainJobConfig":
        self.data.validate()
        self.train.validate()
        self.evaluation.validate()
        return self

    def embed(self) -> VlclipConfig:
        """The embedding job's validated config (its warehouse, catalog, images, spark, ray, models)."""
        return load_config(self.embed_profile, tuple(self.embed_overrides))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_train_config(path: Optional[str] = None, overrides: Tuple[str, ...] = ()) -> TrainJobConfig:
    """Load a training profile; `embed.<key>=value` overrides go to the embedding profile, the rest here."""
    raw = read_profile(path)
    embed = list(raw.get("embed_overrides") or [])
    for item in overrides:
        if item.startswith(EMBED_PREFIX):
            embed.append(item[len(EMBED_PREFIX) :])
        else:
            apply_override(raw, item)
    raw["embed_overrides"] = embed
    return build(TrainJobConfig, raw, "").validate()
