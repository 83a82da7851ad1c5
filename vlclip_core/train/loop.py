"""The training step and the Ray Train worker loop: symmetric InfoNCE on open_clip, checkpoints, resume."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

import numpy as np
import torch

from vlclip_core import storage
from vlclip_core.config import ClipConfig, ConfigError
from vlclip_core.models.clip import load_clip
from vlclip_core.models.null import is_null_clip
from vlclip_core.train.config import TrainConfig
from vlclip_core.train.pairs import ERROR, IMAGE_PNG, SPLIT, TEXT, TRAIN, decode_png

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
MAX_LOGIT_SCALE = math.log(100.0)  # open_clip's clamp of the learnable temperature


@dataclass
class LoopSpec:
    """What every worker needs to train besides its pairs shard: the pairs' count, the starting model and
    the hyper-parameters."""

    train_pairs: int  # good rows of the train split, counted when the pairs were written
    clip: ClipConfig
    train: TrainConfig


def train_dataset(pairs_path: str):
    """The good train pairs (image_png, text) as a lazy Ray Dataset: Ray Train streams it to the workers."""
    import ray.data
    from ray.data.expressions import col

    fs, root = storage.resolve(pairs_path)
    ds = ray.data.read_parquet(root, filesystem=fs, columns=[IMAGE_PNG, TEXT, ERROR, SPLIT])
    return ds.filter(expr=col(ERROR).is_null() & (col(SPLIT) == TRAIN)).select_columns([IMAGE_PNG, TEXT])


def steps_per_epoch(train_pairs: int, world: int, batch_size: int) -> int:
    """Full batches in one worker's equal share (Ray Train splits the rows evenly, the rest is dropped)."""
    share = train_pairs // world
    if share < batch_size:
        raise ConfigError(f"train.batch_size={batch_size} is larger than a worker's {share} train pairs")
    return share // batch_size


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The local shuffle seed of one worker's epoch."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


class PairStream:
    """One worker's shard of the train pairs, streamed in batches from Ray Data.

    `shard` is this worker's `ray.train.get_dataset_shard` iterator (an equal streaming split of
    `train_dataset`). The worker holds the batches in flight and a local shuffle buffer of
    `shuffle_batches` batches, never its whole share. Each epoch is one pass over the shard, shuffled
    within the buffer by (seed, epoch, rank); a run resumed at step s skips the first s % steps_per_epoch
    batches of its epoch.
    """

    def __init__(self, shard, per_epoch: int, tokenizer, preprocess, rank: int, shuffle_batches: int = 4):
        self.shard = shard
        self.per_epoch = per_epoch
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.rank = rank
        self.shuffle_batches = shuffle_batches

    def batches(self, start: int, batch_size: int, seed: int) -> Iterator[tuple]:
        """(epoch, pixels, tokens) of every step from global step `start` on, epoch after epoch."""
        epoch, skip = divmod(start, self.per_epoch)
        while True:
            rows = self.shard.iter_batches(
                batch_size=batch_size,
                batch_format="numpy",
                drop_last=True,
                local_shuffle_buffer_size=self.shuffle_batches * batch_size,
                local_shuffle_seed=epoch_seed(seed, epoch, self.rank),
            )
            seen = 0
            for index, batch in enumerate(rows):
                if index >= self.per_epoch:
                    break
                seen = index + 1
                if index >= skip:
                    yield (epoch, *self.tensors(batch))
            if seen < self.per_epoch:  # never loop forever on a split shorter than the manifest says
                raise RuntimeError(
                    f"worker {self.rank}: epoch {epoch} of the pairs stream ended after {seen} of "
                    f"{self.per_epoch} batches; the pairs no longer match the train count of their manifest"
                )
            log.info("worker %d finished epoch %d (%d batches)", self.rank, epoch, self.per_epoch)
            epoch, skip = epoch + 1, 0

    def tensors(self, batch: dict) -> tuple:
        images = [decode_png(png) for png in batch[IMAGE_PNG]]
        return self.preprocess(images), self.tokenizer([str(t) for t in batch[TEXT]])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig):
    """AdamW without weight decay on gains, biases and the temperature; linear warm-up, then cosine to 0."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "logit_scale" in name else decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_loss(rank: int = 0, world: int = 1):
    """open_clip's symmetric InfoNCE; with several workers the features of all are gathered (with grad)."""
    from open_clip.loss import ClipLoss

    return ClipLoss(local_loss=False, gather_with_grad=True, cache_labels=True, rank=rank, world_size=world)


def train_step(
    model, pixels, tokens, loss_fn, optimizer, scheduler, clip_norm: float, autocast=None
) -> float:
    """One optimisation step on one batch; returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    with autocast or contextlib.nullcontext():
        image_features, text_features, logit_scale = model(pixels, tokens)[:3]
        loss = loss_fn(image_features, text_features, logit_scale)
    loss.backward()
    if clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    scheduler.step()
    with torch.no_grad():
        unwrap(model).logit_scale.clamp_(0, MAX_LOGIT_SCALE)
    return float(loss.detach())


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def load_train_model(clip: ClipConfig, device: torch.device):
    """The starting CLIP through the project's loader (the embedding job's code), in train mode."""
    if is_null_clip(clip.model_name):
        raise ConfigError(
            f"models.clip.model_name={clip.model_name!r} is the null encoder: it has no weights to fine-tune"
        )
    encoder = load_clip(dataclasses.replace(clip, device=str(device.type)), str(device.type))
    return encoder.model.train(), encoder


def _autocast(device: torch.device, precision: str):
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return None


# --- the Ray Train worker -----------------------------------------------------------------------


def train_worker(config: dict) -> None:
    """train_loop_per_worker of the TorchTrainer: resume from Ray Train's latest checkpoint, if any."""
    import ray.train
    import ray.train.torch

    spec: LoopSpec = config["spec"]
    cfg = spec.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.threads())
    seed_everything(cfg.seed + rank)
    device = ray.train.torch.get_device()
    model, encoder = load_train_model(spec.clip, device)
    per_epoch = steps_per_epoch(spec.train_pairs, world, cfg.batch_size)
    stream = PairStream(
        ray.train.get_dataset_shard("train"), per_epoch, encoder.tokenizer, encoder.preprocess, rank
    )
    model = ray.train.torch.prepare_model(model)
    optimizer, scheduler = make_optimizer(model, cfg)
    start, losses = restore(ray.train.get_checkpoint(), unwrap(model), optimizer, scheduler)
    run_steps(
        model, stream, optimizer, scheduler, spec, start, losses, make_loss(rank, world), device, rank, world
    )


def run_steps(
    model,
    stream: PairStream,
    optimizer,
    scheduler,
    spec: LoopSpec,
    start: int,
    losses: List[float],
    loss_fn,
    device,
    rank: int,
    world: int,
) -> None:
    cfg = spec.train
    autocast = _autocast(device, cfg.precision)
    marks: List[tuple] = []
    batches = stream.batches(start, cfg.batch_size, cfg.seed)
    for step, (_, pixels, tokens) in zip(range(start, cfg.steps), batches):
        if not marks:  # the steady rate starts at the first batch, after Ray Data's start-up
            marks.append((time.perf_counter(), start))
        losses.append(
            train_step(
                model,
                pixels.to(device),
                tokens.to(device),
                loss_fn,
                optimizer,
                scheduler,
                cfg.grad_clip_norm,
                autocast,
            )
        )
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            marks.append((time.perf_counter(), done))
            metrics = {
                "step": done,
                "loss": losses[-1],
                "resumed_from_step": start,
                "pairs_per_s": pairs_per_s(marks, cfg.batch_size * world),
            }
            report_checkpoint(metrics, unwrap(model), optimizer, scheduler, losses, rank)
    batches.close()  # ends this worker's pass over its shard


def pairs_per_s(marks: Sequence[tuple], pairs_per_step: int) -> Optional[float]:
    """Pairs per second between the first and the last (time, step) mark of this attempt."""
    (t0, s0), (t1, s1) = marks[0], marks[-1]
    return (s1 - s0) * pairs_per_step / (t1 - t0) if t1 > t0 and s1 > s0 else None


def report_checkpoint(metrics: dict, model, optimizer, scheduler, losses: List[float], rank: int) -> None:
    """Every worker reports (a barrier); rank 0 attaches the checkpoint of the whole training state."""
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": metrics["step"],
                "losses": list(losses),
                "torch_rng": torch.get_rng_state(),
            },
            os.path.join(tmp, STATE_FILE),
        )
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
            checkpoint_dir_name=f"checkpoint_step_{metrics['step']:08d}",
        )


def restore(checkpoint, model, optimizer, scheduler):
    """(start step, loss history) from a Ray Train checkpoint, loading its state; (0, []) without one."""
    if checkpoint is None:
        return 0, []
    with checkpoint.as_directory() as path:
        state = load_state(path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    log.info("resuming from step %d (%s)", state["step"], checkpoint.path)
    return int(state["step"]), list(state["losses"])


def load_state(checkpoint_dir: str) -> dict:
    return torch.load(os.path.join(checkpoint_dir, STATE_FILE), map_location="cpu", weights_only=False)
