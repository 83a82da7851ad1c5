"""Fine-tuning and evaluation end to end: embed -> pairs -> Ray Train -> checkpoint -> embed + evaluate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from job_helpers import REPO, TEST_ITEMS, job_overrides

from vlclip_core import schema as S
from vlclip_core.config import load_config
from vlclip_core.run.job import run_job
from vlclip_core.train.config import load_train_config
from vlclip_core.warehouse.tables import Tables, table_version

pytestmark = pytest.mark.usefixtures("ray_local")
SMALL = (
    "train.batch_size=8",
    "train.lr=0.001",
    "train.warmup_steps=2",
    "train.cpus_per_worker=0.5",
    "data.max_side=64",
    "data.min_train_items=8",
    "evaluation.batch_size=16",
)


def train_overrides(models, catalog, warehouse, output_dir, *extra) -> tuple:
    embed = tuple(f"embed.{o}" for o in job_overrides(models, str(catalog), str(warehouse)))
    return embed + SMALL + (f"train.output_dir={output_dir}",) + extra


@pytest.fixture(scope="module")
def trained(spark, tiny_models, sample_root, tmp_path_factory):
    """An embedding run over the sample catalog, then 40 training steps on its pairs."""
    from vlclip_core.train.trainer import run_training

    root = tmp_path_factory.mktemp("train")
    catalog, warehouse = sample_root / "catalog", root / "wh"
    embed_report = run_job(
        load_config("conf/tiny.yaml", job_overrides(tiny_models, str(catalog), str(warehouse))), spark
    )
    cfg = load_train_config(
        "conf/train_tiny.yaml",
        train_overrides(
            tiny_models, catalog, warehouse, root / "training", "train.steps=40", "train.checkpoint_every=20"
        ),
    )
    return {
        "root": root,
        "catalog": catalog,
        "warehouse": warehouse,
        "embed": embed_report,
        "cfg": cfg,
        "report": run_training(cfg, spark),
    }


def test_loss_decreases_and_the_run_is_recorded(spark, trained):
    report, cfg = trained["report"], trained["cfg"]
    losses = report.losses
    assert report.status == "succeeded" and report.steps == 40 and len(losses) == 40
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses
    tables = Tables(spark, cfg.embed().warehouse)
    rows = tables.read("training_runs").where(f"run_id = '{report.run_id}'").collect()
    assert len(rows) == 1
    row = rows[0]
    assert row.status == "succeeded" and row.steps == 40 and row.resumed_from_step == 0
    assert row.data_model_version == trained["embed"].model_version
    assert row.data_version == table_version(tables, "embeddings")
    assert row.train_items + row.eval_items + row.failed_items == TEST_ITEMS and row.failed_items == 0
    assert row.losses == pytest.approx(losses, rel=1e-6)
    assert row.hyper_parameters["batch_size"] == "8" and row.pairs_per_s > 0
    assert row.output_model_version == report.output_model_version != trained["embed"].model_version


RESUME_STEPS = 60  # the kill lands at the first checkpoint (step 20), well before the last step


def test_training_resumes_after_the_process_is_killed(spark, trained, tiny_models):
    """SIGKILL `python -m jobs.train_clip` once Ray Train has a checkpoint; rerun the same run id."""
    from jobs.train_clip import main

    # the fixture's output directory and data: the pairs are written already, the subprocess reuses them
    out = trained["root"] / "training"
    overrides = train_overrides(
        tiny_models,
        trained["catalog"],
        trained["warehouse"],
        out,
        f"train.steps={RESUME_STEPS}",
        "train.checkpoint_every=20",
    )
    argv = ["--config", "conf/train_tiny.yaml", "--run-id", "resume-test", "--log-level", "WARNING"]
    argv += [a for o in overrides for a in ("--set", o)]
    snapshot = out / "runs" / "resume-test" / "checkpoint_manager_snapshot.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.train_clip", *argv],
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        checkpoint_dir = wait_for_checkpoint(snapshot, proc, timeout_s=600)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed = torch.load(
        out / "runs" / "resume-test" / checkpoint_dir / "state.pt", map_location="cpu", weights_only=False
    )
    assert 0 < killed["step"] < RESUME_STEPS

    assert main(argv) == 0
    rows = (
        Tables(spark, trained["cfg"].embed().warehouse)
        .read("training_runs")
        .where("run_id = 'resume-test'")
        .collect()
    )
    assert len(rows) == 1 and rows[0].status == "succeeded" and rows[0].steps == RESUME_STEPS
    assert rows[0].resumed_from_step >= killed["step"]  # a later checkpoint may have landed before the kill
    assert len(rows[0].losses) == RESUME_STEPS
    assert rows[0].losses[: killed["step"]] == pytest.approx(killed["losses"], rel=1e-6)


def test_trained_checkpoint_loads_in_the_embedding_job(spark, trained, tiny_models):
    report = trained["report"]
    config = load_config(
        "conf/tiny.yaml",
        job_overrides(tiny_models, str(trained["catalog"]), str(trained["warehouse"]))
        + (f"models.clip.pretrained={report.output_checkpoint}",),
    )
    embed = run_job(config, spark)
    assert embed.status == "succeeded" and embed.model_version == report.output_model_version
    assert embed.items_embedded == TEST_ITEMS
    emb = Tables(spark, config.warehouse).read("embeddings")
    before = {
        r.item_id: r.image_embedding
        for r in emb.where(f"model_version = '{trained['embed'].model_version}'").collect()
    }
    after = {
        r.item_id: r.image_embedding for r in emb.where(f"model_version = '{embed.model_version}'").collect()
    }
    assert before.keys() == after.keys()
    assert all(not np.allclose(before[k], after[k], atol=1e-3) for k in before)
    saved = torch.load(report.output_checkpoint, map_location="cpu", weights_only=True)
    initial = torch.load(tiny_models["clip_checkpoint"], map_location="cpu", weights_only=True)
    assert saved.keys() == initial.keys()
    assert not torch.equal(saved["logit_scale"], initial["logit_scale"])


def test_evaluation_rows_are_keyed_and_rerun_safe(spark, trained, tiny_models):
    from vlclip_core.train.evaluate import IMAGE_TO_IMAGE, TEXT_TO_IMAGE, run_evaluation

    cfg, report = trained["cfg"], trained["report"]
    untrained = run_evaluation(cfg, None, spark)
    first = run_evaluation(cfg, report.output_checkpoint, spark)
    again = run_evaluation(cfg, report.output_checkpoint, spark)
    assert untrained.model_version == trained["embed"].model_version
    assert first.model_version == report.output_model_version and first.eval_id == untrained.eval_id
    eval_items = report.dataset.counts["eval"]
    assert first.overall(TEXT_TO_IMAGE)["queries"] == eval_items
    assert [r["mrr"] for r in first.rows] == [r["mrr"] for r in again.rows]  # deterministic
    table = Tables(spark, cfg.embed().warehouse).read("evaluations")
    stored = table.where(f"model_version = '{report.output_model_version}'").collect()
    assert len(stored) == len(first.rows)  # the rerun replaced its rows, none duplicated
    keys = {(r.task, r.product_type) for r in stored}
    assert (TEXT_TO_IMAGE, S.ALL_PRODUCT_TYPES) in keys and (IMAGE_TO_IMAGE, S.ALL_PRODUCT_TYPES) in keys
    assert all(0.0 <= r.mrr <= 1.0 and r.ablation == "none" for r in stored)


def wait_for_checkpoint(snapshot, proc, timeout_s: float) -> str:
    """The directory name of the first checkpoint Ray Train's snapshot records."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"training exited with {proc.returncode} before its first checkpoint"
        if snapshot.exists():
            try:
                latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
            except ValueError:
                latest = None  # being written
            if latest:
                return latest["checkpoint_dir_name"]
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint in {snapshot} after {timeout_s} s")
