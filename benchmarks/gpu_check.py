"""`make gpu-check`: prod-sized architectures (random weights) through the project's stages on one GPU.

Builds Grounding DINO-T (Swin-T + BERT-base), open_clip ViT-L-14 and a ~1.1B Llama from configs, saves each
to a temporary directory, loads them through the project's loaders and stage classes (bf16), and reports
images/s (grounding, CLIP), generated tokens/s (enrichment) and GPU utilisation per stage. No downloads.
`--cpu-smoke` shrinks every architecture to tiny sizes and runs 2 batches per stage on the CPU: it checks
the script itself where no GPU is at hand.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

log = logging.getLogger("benchmarks.gpu_check")

CLIP_L14_A100_IMG_S = 312.0  # clip-retrieval's public ViT-L/14 inference figure per A100
CLIP_L14_GFLOPS_PER_IMAGE = 162.0
BF16_DENSE_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}


@dataclass(frozen=True)
class Spec:
    """Architecture sizes and workload of one check (prod on a GPU, or the tiny CPU smoke)."""

    name: str
    detector: dict
    swin: Optional[dict]
    bert: dict
    processor_size: dict
    clip_model: str
    clip_config: Optional[dict]
    llm: dict
    batch: Dict[str, int]
    timed_batches: Dict[str, int]
    max_new_tokens: int
    max_side: int
    e2e_items: int = 0  # items of the end-to-end comparison (the job vs the naive job on this device)


PROD = Spec(
    name="prod",
    detector={},  # GroundingDinoConfig defaults = Grounding DINO-T (d_model 256, 900 queries, 6+6 layers)
    swin=dict(
        embed_dim=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        out_features=["stage2", "stage3", "stage4"],
    ),
    bert=dict(vocab_size=30522),  # BertConfig defaults = BERT-base
    processor_size={"shortest_edge": 800, "longest_edge": 1333},
    clip_model="ViT-L-14",
    clip_config=None,
    llm=dict(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=2048,
    ),
    batch={"grounding": 16, "enrichment": 64, "clip": 256},
    timed_batches={"grounding": 6, "enrichment": 1, "clip": 6},
    max_new_tokens=128,
    max_side=800,
    e2e_items=2000,
)
SMOKE = Spec(
    name="cpu-smoke",
    detector=dict(
        d_model=32,
        num_queries=30,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=128,
    ),
    swin=dict(
        image_size=128,
        patch_size=4,
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 2, 2],
        window_size=4,
        out_features=["stage2", "stage3", "stage4"],
    ),
    bert=dict(
        vocab_size=1024,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    ),
    processor_size={"shortest_edge": 128, "longest_edge": 192},
    clip_model="gpucheck-tiny",
    clip_config={
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    },
    llm=dict(
        vocab_size=1024,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
    ),
    batch={"grounding": 4, "enrichment": 4, "clip": 8},
    timed_batches={"grounding": 1, "enrichment": 1, "clip": 1},
    max_new_tokens=8,
    max_side=320,
    e2e_items=24,
)


# --- building the architectures --------------------------------------------------------------------


def build_detector(root: str, spec: Spec, device: str) -> str:
    """Grounding DINO from config (random weights) + processor with a real-size WordPiece vocabulary."""
    import torch
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    from vlclip_core.models.tiny import tiny_bert_vocab

    path = os.path.join(root, "detector")
    vocab = padded_vocab(tiny_bert_vocab(), spec.bert["vocab_size"], "[unused{}]")
    tokenizer = BertTokenizerFast(vocab=vocab)
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size=spec.processor_size), tokenizer=tokenizer
    )
    processor.save_pretrained(path)
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(**spec.swin), text_config=BertConfig(**spec.bert), **spec.detector
    )
    with torch.device(device):
        model = GroundingDinoForObjectDetection(config).eval()
    model.save_pretrained(path)
    return path


def padded_vocab(vocab: Dict[str, int], size: int, filler: str) -> Dict[str, int]:
    """`vocab` extended with filler tokens up to `size` entries (the real model's vocabulary size)."""
    out = dict(vocab)
    i = 0
    while len(out) < size:
        out.setdefault(filler.format(i), len(out))
        i += 1
    return out


def build_clip(root: str, spec: Spec, device: str) -> Dict[str, Optional[str]]:
    """open_clip `spec.clip_model` with pretrained=None, its state dict saved as a local checkpoint file."""
    import open_clip
    import torch

    config_dir = None
    if spec.clip_config:
        config_dir = os.path.join(root, "clip_configs")
        os.makedirs(config_dir, exist_ok=True)
        with open(os.path.join(config_dir, f"{spec.clip_model}.json"), "w", encoding="utf-8") as fh:
            json.dump(spec.clip_config, fh)
        open_clip.add_model_config(config_dir)
    model = open_clip.create_model(spec.clip_model, pretrained=None, device=device)
    checkpoint = os.path.join(root, "clip.pt")
    torch.save(model.state_dict(), checkpoint)
    return {"checkpoint": checkpoint, "config_dir": config_dir}


def build_llm(root: str, spec: Spec, device: str) -> str:
    """A Llama causal LM from config (bf16 on GPU), the built-in BPE tokenizer padded to the real vocab."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from vlclip_core.llm.tiny import build_tiny_tokenizer

    path = os.path.join(root, "llm")
    tokenizer = build_tiny_tokenizer()
    tokenizer.add_tokens([f"<x{i}>" for i in range(spec.llm["vocab_size"] - len(tokenizer))])
    config = LlamaConfig(
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        **spec.llm,
    )
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype).eval()
    model.generation_config.do_sample = False
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tokenizer.save_pretrained(path)
    model.save_pretrained(path)
    return path


def stage_config(spec: Spec, device: str, detector: str, clip: dict, llm: str, *extra: str):
    """The VlclipConfig that the stage classes load the built models from (bf16 on GPU)."""
    from vlclip_core.config import load_config

    overrides = [
        "catalog.path=unused",
        f"models.device={device}",
        "models.detector.kind=grounding_dino",
        f"models.detector.path={detector}",
        "models.detector.dtype=bfloat16",
        "models.detector.box_threshold=0.3",
        "models.detector.text_threshold=0.25",
        f"models.clip.model_name={spec.clip_model}",
        f"models.clip.pretrained={clip['checkpoint']}",
        "models.clip.precision=bf16",
        "models.llm.backend=transformers",
        f"models.llm.path={llm}",
        "models.llm.dtype=bfloat16",
        f"models.llm.max_new_tokens={spec.max_new_tokens}",
        "models.llm.max_rounds=1",
        f"images.max_side={spec.max_side}",
    ]
    overrides += [f"stages.{name}.batch_size={size}" for name, size in spec.batch.items()]
    if clip["config_dir"]:
        overrides.append(f"models.clip.config_dir={clip['config_dir']}")
    return load_config(None, tuple(overrides) + extra)


# --- GPU utilisation ---------------------------------------------------------------------------------


@dataclass
class GpuSampler:
    """Stream `nvidia-smi --query-gpu=utilization.gpu,memory.used -lms 200` into (time, util %, MiB)."""

    samples: List[tuple] = field(default_factory=list)
    _proc: Optional[subprocess.Popen] = None
    _thread: Optional[threading.Thread] = None

    def start(self) -> "GpuSampler":
        if not shutil.which("nvidia-smi"):
            return self
        self._proc = subprocess.Popen(
            [
                "nvidia-smi",
                "--query-gpu=utilization.gpu,memory.used",
                "--format=csv,noheader,nounits",
                "-lms",
                "200",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 2 and parts[0].isdigit():
                self.samples.append((time.perf_counter(), float(parts[0]), float(parts[1])))

    def stop(self) -> None:
        if self._proc:
            self._proc.terminate()
            self._proc.wait(timeout=5)

    def window(self, start: float, stop: float) -> Dict[str, Optional[float]]:
        inside = [s for s in self.samples if start <= s[0] <= stop]
        if not inside:
            return {
                "gpu_util_mean_pct": None,
                "gpu_util_max_pct": None,
                "gpu_mem_max_mib": None,
                "samples": 0,
            }
        utils = [s[1] for s in inside]
        return {
            "gpu_util_mean_pct": round(float(np.mean(utils)), 1),
            "gpu_util_max_pct": max(utils),
            "gpu_mem_max_mib": max(s[2] for s in inside),
            "samples": len(inside),
        }


# --- running the stages ------------------------------------------------------------------------------


def input_batch(root: str, n_items: int, config) -> dict:
    """`n_items` sample-catalog items (real JPEGs), decoded by the project's decode stage."""
    from benchmarks.bare import work_batch
    from vlclip_core.stages.decode import DecodeStage
    from vlclip_core.tools.sample_catalog import make_sample_catalog, read_catalog

    catalog = make_sample_catalog(os.path.join(root, "sample"), n_items=n_items, seed=0)
    return DecodeStage(config)(work_batch(read_catalog(catalog)))


def take(batch: dict, rows: np.ndarray) -> dict:
    """Rows of a batch as fresh arrays (stages clear image columns of the rows they processed)."""
    return {k: v[rows].copy() for k, v in batch.items()}


def timed_stage(
    stage, batch: dict, size: int, timed: int, gpu: GpuSampler, sync, on_timed_start=None
) -> dict:
    """One warm-up batch, then `timed` batches of `size` rows; returns rows/s, batch times and GPU use."""
    n = len(batch["item_id"])
    pick = [np.arange(i * size, (i + 1) * size) % n for i in range(timed + 1)]
    warm_start = time.perf_counter()
    stage(take(batch, pick[0]))
    sync()
    warm = time.perf_counter() - warm_start
    if on_timed_start:
        on_timed_start()
    start = time.perf_counter()
    times = []
    for rows in pick[1:]:
        t0 = time.perf_counter()
        out = stage(take(batch, rows))
        sync()
        times.append(time.perf_counter() - t0)
    stop = time.perf_counter()
    check_ok(out, stage.name)
    return {
        "rows": timed * size,
        "seconds": round(stop - start, 3),
        "rows_per_s": round(timed * size / (stop - start), 2),
        "warmup_s": round(warm, 3),
        "batch_s": [round(t, 3) for t in times],
        **gpu.window(start, stop),
    }


def check_ok(out: dict, stage: str) -> None:
    """A stage turns exceptions into error rows: a batch without one ok row means the stage is broken."""
    from vlclip_core import schema as S

    ok = out[S.STATUS] == S.STATUS_OK
    if not ok.any():
        raise RuntimeError(
            f"stage {stage}: no row succeeded; first error: {out[S.ERROR_TYPE][0]}: {out[S.ERROR_MESSAGE][0]}"
        )


def count_generated_tokens(backend) -> Dict[str, int]:
    """Wrap the backend model's generate to count generated (non-pad) tokens."""
    counter = {"tokens": 0, "generate_calls": 0}
    real = backend.model.generate
    pad = backend.tokenizer.pad_token_id

    def generate(*args, **kwargs):
        output = real(*args, **kwargs)
        new = output[:, kwargs["input_ids"].shape[1] :]
        counter["tokens"] += int((new != pad).sum())
        counter["generate_calls"] += 1
        return output

    backend.model.generate = generate
    return counter


def clip_forward_only(encoder, size: int, timed: int, gpu: GpuSampler, sync) -> dict:
    """The image tower alone on a ready device tensor (no CPU preprocessing).

    This is the figure comparable to 312 img/s.
    """
    import torch

    h, w = encoder.preprocess.size
    pixels = torch.randn(size, 3, h, w, device=encoder.device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=encoder.device.type == "cuda")
    with torch.inference_mode(), autocast:
        encoder.model.encode_image(pixels)
        sync()
        start = time.perf_counter()
        for _ in range(timed):
            encoder.model.encode_image(pixels)
        sync()
        stop = time.perf_counter()
    return {
        "rows": size * timed,
        "rows_per_s": round(size * timed / (stop - start), 2),
        **gpu.window(start, stop),
    }


def run_check(spec: Spec, device: str, root: str) -> dict:
    import torch

    from vlclip_core.stages.clip_encode import ClipStage
    from vlclip_core.stages.enrichment import EnrichmentStage
    from vlclip_core.stages.grounding import GroundingStage

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    build_start = time.perf_counter()
    paths = {
        "detector": build_detector(root, spec, device),
        "clip": build_clip(root, spec, device),
        "llm": build_llm(root, spec, device),
    }
    if device == "cuda":
        torch.cuda.empty_cache()
    build_s = time.perf_counter() - build_start
    config = stage_config(spec, device, paths["detector"], paths["clip"], paths["llm"])
    n_items = max(spec.batch["grounding"], spec.batch["enrichment"]) * 2
    batch = input_batch(root, n_items, config)
    gpu = GpuSampler().start()
    try:
        figures = _stages(spec, config, batch, gpu, sync, GroundingStage, EnrichmentStage, ClipStage)
    finally:
        gpu.stop()
    figures["build_and_save_s"] = round(build_s, 1)
    if spec.e2e_items:
        figures["e2e"] = run_e2e(spec, device, paths, root)
    return figures


# Shares of the one GPU in the job's split layout: the three model pools fit on it together.
E2E_GPU_SHARES = {"grounding": 0.4, "enrichment": 0.3, "clip": 0.3}


def run_e2e(spec: Spec, device: str, paths: dict, root: str) -> dict:
    """The whole job (Spark staging, the Ray pipeline with its pools on this device, Delta MERGE) vs the
    naive job (the same stages in Spark mapInPandas, models per Python worker on the same device), on
    the same catalog of sample images: wall seconds and items/s of each, and the job's pool figures."""
    import ray

    from benchmarks.catalogs import cycled_catalog
    from benchmarks.naive import run_naive
    from vlclip_core.run.job import run_job
    from vlclip_core.warehouse.spark_session import get_spark

    catalog = cycled_catalog(os.path.join(root, "data"), spec.e2e_items, min(spec.e2e_items, 200), 0)
    job = stage_config(
        spec, device, paths["detector"], paths["clip"], paths["llm"],
        *_e2e_overrides(catalog, os.path.join(root, "warehouse"), device == "cuda"),
    )
    spark = get_spark(job.spark)
    start = time.perf_counter()
    report = run_job(job, spark)
    vlclip_s = time.perf_counter() - start
    ray.shutdown()
    partitions = int(os.environ.get("VLCLIP_GPU_CHECK_NAIVE_PARTITIONS", "2"))
    naive = run_naive(spark, catalog, job, os.path.join(root, "naive"), partitions, "gpu-check")
    spark.stop()
    return {
        "items": spec.e2e_items,
        "vlclip_s": round(vlclip_s, 1),
        "vlclip_items_per_s": round(report.items_embedded / vlclip_s, 2),
        "vlclip_embedded": report.items_embedded,
        "vlclip_phase_seconds": report.phase_seconds,
        "vlclip_pipeline_stats": report.pipeline_stats,
        "naive_s": round(naive["total_s"], 1),
        "naive_items_per_s": round(naive["ok"] / naive["total_s"], 2),
        "naive_ok": naive["ok"],
        "naive_partitions": partitions,
        "wall_ratio_naive_over_vlclip": round(naive["total_s"] / vlclip_s, 2),
    }


def _e2e_overrides(catalog: str, warehouse: str, gpu: bool) -> List[str]:
    overrides = [
        f"catalog.path={catalog}",
        f"warehouse.path={warehouse}",
        "spark.master=local[4]",
        "ray.address=local",
        "job.mode=backfill",
        "job.shard_size=500",
        "stages.layout=split",
    ]
    if gpu:
        overrides += [f"stages.{name}.num_gpus={share}" for name, share in E2E_GPU_SHARES.items()]
    else:  # the CPU smoke: fractional CPUs, as on the 2-core development machine
        overrides += [f"stages.{name}.num_cpus=0.25" for name in ("decode", *E2E_GPU_SHARES)]
    return overrides


def _stages(
    spec: Spec, config, batch: dict, gpu: GpuSampler, sync, grounding_cls, enrichment_cls, clip_cls
) -> dict:
    figures = {}
    load = time.perf_counter()
    grounding = grounding_cls(config)
    figures["grounding_load_s"] = round(time.perf_counter() - load, 1)
    figures["grounding"] = timed_stage(
        grounding, batch, spec.batch["grounding"], spec.timed_batches["grounding"], gpu, sync
    )
    grounded = grounding(take(batch, np.arange(len(batch["item_id"]))))
    del grounding
    load = time.perf_counter()
    enrichment = enrichment_cls(config)
    figures["enrichment_load_s"] = round(time.perf_counter() - load, 1)
    tokens = count_generated_tokens(enrichment.agent.backend)
    figures["enrichment"] = timed_stage(
        enrichment,
        batch,
        spec.batch["enrichment"],
        spec.timed_batches["enrichment"],
        gpu,
        sync,
        on_timed_start=lambda: tokens.update(tokens=0, generate_calls=0),
    )
    if not tokens["tokens"]:
        raise RuntimeError("enrichment: the LLM generated no token (see the log for the backend error)")
    figures["enrichment"].update(
        generated_tokens=tokens["tokens"],
        generate_calls=tokens["generate_calls"],
        tokens_per_s=round(tokens["tokens"] / figures["enrichment"]["seconds"], 1),
    )
    enriched = enrichment(take(grounded, np.arange(len(grounded["item_id"]))))
    del enrichment
    clip = clip_cls(config)
    figures["clip"] = timed_stage(clip, enriched, spec.batch["clip"], spec.timed_batches["clip"], gpu, sync)
    figures["clip_image_forward_only"] = clip_forward_only(
        clip.encoder, spec.batch["clip"], spec.timed_batches["clip"], gpu, sync
    )
    return figures


# --- report ------------------------------------------------------------------------------------------


def summary(figures: dict, spec: Spec, device_name: str) -> dict:
    forward = figures["clip_image_forward_only"]["rows_per_s"]
    peak = next((v for k, v in BF16_DENSE_PEAK_TFLOPS.items() if k in device_name), None)
    tflops = forward * CLIP_L14_GFLOPS_PER_IMAGE / 1000.0
    return {
        "check": spec.name,
        "device": device_name,
        "date": time.strftime("%Y-%m-%d"),
        "grounding_img_per_s": figures["grounding"]["rows_per_s"],
        "clip_stage_items_per_s": figures["clip"]["rows_per_s"],
        "clip_image_forward_img_per_s": forward,
        "clip_forward_vs_a100_312": round(forward / CLIP_L14_A100_IMG_S, 2),
        "clip_forward_tflops": round(tflops, 1) if spec.name == "prod" else None,
        "clip_forward_share_of_bf16_peak": round(tflops / peak, 3) if peak and spec.name == "prod" else None,
        "llm_tokens_per_s": figures["enrichment"]["tokens_per_s"],
        "llm_items_per_s": figures["enrichment"]["rows_per_s"],
        "figures": figures,
    }


def markdown(result: dict, command: str) -> str:
    f = result["figures"]
    rows = [
        ("grounding (Grounding DINO-T, bf16)", f"{result['grounding_img_per_s']} img/s", f["grounding"]),
        (
            "enrichment (1.1B Llama, bf16, 3 steps)",
            f"{result['llm_tokens_per_s']} tok/s, {result['llm_items_per_s']} items/s",
            f["enrichment"],
        ),
        (
            "CLIP stage (ViT-L-14, image+text+fusion)",
            f"{result['clip_stage_items_per_s']} items/s",
            f["clip"],
        ),
        (
            "CLIP image tower forward only",
            f"{result['clip_image_forward_img_per_s']} img/s "
            f"({result['clip_forward_vs_a100_312']}x the A100's 312 img/s)",
            f["clip_image_forward_only"],
        ),
    ]
    lines = [
        f"GPU check {result['date']} on {result['device']}: `{command}`",
        "",
        "| stage | throughput | GPU util mean/max | GPU memory max |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {value} | {w.get('gpu_util_mean_pct')}/{w.get('gpu_util_max_pct')} % | "
        f"{w.get('gpu_mem_max_mib')} MiB |"
        for name, value, w in rows
    ]
    e2e = f.get("e2e")
    if e2e:
        lines.append(
            f"\nEnd to end, {e2e['items']} items on this device: the job {e2e['vlclip_s']} s "
            f"({e2e['vlclip_items_per_s']} items/s) vs the naive mapInPandas job ({e2e['naive_partitions']} "
            f"partitions) {e2e['naive_s']} s ({e2e['naive_items_per_s']} items/s): naive/job wall "
            f"{e2e['wall_ratio_naive_over_vlclip']}x."
        )
    if result["clip_forward_share_of_bf16_peak"] is not None:
        lines.append(
            f"\nCLIP forward: {result['clip_forward_tflops']} TFLOPS = "
            f"{result['clip_forward_share_of_bf16_peak']:.1%} of the bf16 dense peak."
        )
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="tiny architectures, 2 batches per stage, on CPU"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(key, "1")
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        sys.stderr.write(
            "gpu_check: CUDA is not available on this machine; run it on a GPU node "
            "(or `python -m benchmarks.gpu_check --cpu-smoke` to check the script on CPU)\n"
        )
        return 2
    spec, device = (SMOKE, "cpu") if args.cpu_smoke else (PROD, "cuda")
    device_name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    root = tempfile.mkdtemp(prefix="vlclip-gpu-check-")
    try:
        result = summary(run_check(spec, device, root), spec, device_name)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    command = "python -m benchmarks.gpu_check" + (" --cpu-smoke" if args.cpu_smoke else "")
    print(json.dumps(result, default=str))
    print(markdown(result, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
