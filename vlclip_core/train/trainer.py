"""The training run on the driver: pairs (Spark) -> Ray Train TorchTrainer -> checkpoint + runs row."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from vlclip_core import storage
from vlclip_core.config import VlclipConfig, digest, load_config
from vlclip_core.run.state import utcnow
from vlclip_core.train.config import TrainJobConfig
from vlclip_core.train.loop import LoopSpec, load_state, train_dataset, train_worker
from vlclip_core.train.pairs import TRAIN, PairsDataset, prepare_pairs
from vlclip_core.train.records import write_training_run
from vlclip_core.warehouse.spark_session import get_spark
from vlclip_core.warehouse.tables import Tables

log = logging.getLogger(__name__)

MODEL_FILE = "open_clip_model.pt"
RUN_DATASET = "vlclip_dataset.json"  # the PairsDataset a run trains on, written before its first step


@dataclass
class TrainingReport:
    """What one training run did: the row of the training_runs table."""

    run_id: str
    status: str = "running"
    started_at: object = None
    finished_at: object = None
    dataset: Optional[PairsDataset] = None
    model_name: str = ""
    init_checkpoint: Optional[str] = None
    output_checkpoint: Optional[str] = None
    output_model_version: Optional[str] = None
    hyper_parameters: Dict[str, str] = field(default_factory=dict)
    steps: int = 0
    resumed_from_step: int = 0
    losses: List[float] = field(default_factory=list)
    pairs_per_s: Optional[float] = None
    config_hash: str = ""
    message: Optional[str] = None


def run_training(cfg: TrainJobConfig, spark=None) -> TrainingReport:
    """Fine-tune (or resume) one run end to end; the runs row is written on success and on failure."""
    embed = cfg.embed()
    spark = spark or get_spark(embed.spark)
    tables = Tables(spark, embed.warehouse)
    tables.ensure("training_runs")
    dataset = run_dataset(cfg, cfg.train.run_id) or prepare_pairs(spark, cfg, embed)
    report = new_report(cfg, embed, dataset)
    storage.write_json(storage.join(run_dir(cfg), report.run_id, RUN_DATASET), dataclasses.asdict(dataset))
    try:
        state = fit(cfg, embed, dataset, report.run_id)
        finish(report, state, cfg, embed)
    except BaseException as err:
        report.status, report.message = "failed", f"{type(err).__name__}: {err}"[:2000]
        report.finished_at = utcnow()
        write_training_run(tables, report)
        raise
    write_training_run(tables, report)
    log.info(
        "training run %s: %d steps, loss %.4f -> %.4f, checkpoint %s",
        report.run_id,
        report.steps,
        report.losses[0],
        report.losses[-1],
        report.output_checkpoint,
    )
    return report


def run_dataset(cfg: TrainJobConfig, run_id: Optional[str]) -> Optional[PairsDataset]:
    """The pairs an earlier attempt of `run_id` trained on: a resumed run continues on the same data."""
    path = storage.join(run_dir(cfg), run_id, RUN_DATASET) if run_id else None
    if path and storage.exists(path):
        log.info("training run %s resumes on its dataset (%s)", run_id, path)
        return PairsDataset(**storage.read_json(path))
    return None


def new_report(cfg: TrainJobConfig, embed: VlclipConfig, dataset: PairsDataset) -> TrainingReport:
    hyper = cfg.train.hyper_parameters()
    run_id = cfg.train.run_id or default_run_id(dataset, embed, hyper)
    return TrainingReport(
        run_id=run_id,
        started_at=utcnow(),
        dataset=dataset,
        model_name=embed.models.clip.model_name,
        init_checkpoint=embed.models.clip.pretrained,
        hyper_parameters={k: str(v) for k, v in sorted(hyper.items())},
        config_hash=digest(cfg.to_dict())[:16],
    )


def default_run_id(dataset: PairsDataset, embed: VlclipConfig, hyper: dict) -> str:
    """Same data, starting model and hyper-parameters -> same run id, so rerunning a killed run resumes it."""
    return (
        "train-" + digest({"dataset": dataset.dataset_id, "clip": embed.models.clip.identity(), **hyper})[:12]
    )


def run_dir(cfg: TrainJobConfig) -> str:
    """Ray Train's storage_path: <train.output_dir>/runs (absolute for local paths)."""
    return storage.spark_path(storage.join(cfg.train.output_dir, "runs"))


def fit(cfg: TrainJobConfig, embed: VlclipConfig, dataset: PairsDataset, run_id: str) -> dict:
    """Run the TorchTrainer; a run directory holding checkpoints resumes from the latest one.

    Returns the final training state (model/optimizer state dicts, step, losses).
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from vlclip_core.pipeline.ray_init import init_ray

    init_ray(embed.ray)
    t = cfg.train
    resources = {"CPU": t.cpus_per_worker, **({"GPU": 1} if t.use_gpu else {})}
    spec = LoopSpec(dataset.counts[TRAIN], clip_for_workers(embed), t)
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"spec": spec},
        datasets={"train": train_dataset(dataset.path)},  # an equal streaming split per worker
        scaling_config=ScalingConfig(
            num_workers=t.num_workers, use_gpu=t.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=run_id,
            storage_path=run_dir(cfg),
            checkpoint_config=CheckpointConfig(num_to_keep=t.keep_checkpoints),
            failure_config=FailureConfig(max_failures=t.max_failures),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training run {run_id} finished without a checkpoint")
    with result.checkpoint.as_directory() as path:
        state = load_state(path)
    state["metrics"] = dict(result.metrics or {})
    return state


def clip_for_workers(embed: VlclipConfig):
    """models.clip with local paths made absolute: Ray Train workers do not share the driver's cwd."""
    clip = embed.models.clip
    absolute = {
        k: os.path.abspath(v)
        for k in ("pretrained", "config_dir")
        if (v := getattr(clip, k)) and os.path.exists(v)
    }
    return dataclasses.replace(clip, **absolute)


def finish(report: TrainingReport, state: dict, cfg: TrainJobConfig, embed: VlclipConfig) -> None:
    """Write the open_clip checkpoint (a state dict, as models.clip.pretrained loads); fill the report."""
    report.steps, report.losses = int(state["step"]), [float(v) for v in state["losses"]]
    if report.steps != cfg.train.steps:
        raise RuntimeError(f"run {report.run_id} stopped at step {report.steps} of {cfg.train.steps}")
    path = storage.join(run_dir(cfg), report.run_id, MODEL_FILE)
    save_model(state["model"], path)
    report.output_checkpoint = path
    report.output_model_version = trained_model_version(cfg, path)
    report.resumed_from_step = int(state["metrics"].get("resumed_from_step", 0))
    report.pairs_per_s = state["metrics"].get("pairs_per_s")
    report.status, report.finished_at = "succeeded", utcnow()


def save_model(state_dict: dict, uri: str) -> None:
    """torch.save to a local path or a filesystem URI, through a temporary name and a move."""
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    fs, path = storage.resolve(uri)
    fs.create_dir(os.path.dirname(path), recursive=True)
    with fs.open_output_stream(path + ".tmp") as out:
        out.write(buf.getvalue())
    fs.move(path + ".tmp", path)


def trained_model_version(cfg: TrainJobConfig, checkpoint: str) -> str:
    """The model_version the embedding job writes with `models.clip.pretrained=<checkpoint>`."""
    return load_config(
        cfg.embed_profile, tuple(cfg.embed_overrides) + (f"models.clip.pretrained={checkpoint}",)
    ).model_version
