"""Smoke tests of the benchmark harness: the bare loop and report, a profiled run, io_bound on loopback."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.catalogs import cycled_catalog
from benchmarks.context import BenchContext, BenchOptions, summarise
from benchmarks.measure import machine_info, ratio
from benchmarks.report import headline, table_lines, write_json
from benchmarks.run import run_comparison

torch.set_num_threads(1)
ITEMS = 8


def test_bare_loop_figures_and_report_json(tmp_path, tiny_models):
    ctx = BenchContext(options=BenchOptions(out=str(tmp_path / "out"), model_size="tiny"))
    ctx._models["tiny"] = tiny_models
    catalog = cycled_catalog(str(tmp_path / "data"), ITEMS, pool=4)
    run = ctx.timed_bare(catalog, "tiny", "stages.clip.batch_size=2")
    assert (run["items_ok"], run["detector_calls"]) == (ITEMS, ITEMS)
    assert run["llm_calls"] >= ITEMS and run["steady_items_per_s"] > 0
    assert 0 < run["first_batch_s"] < run["total_s"] and run["rss_mib"]["driver_mib"] > 0

    def bare_only(_ctx):
        figures = {"bare": summarise([run]), "self_ratio": ratio([run["total_s"]], [run["total_s"] / 2])}
        return {
            "figures": figures,
            "headline": [headline("bare steady", figures["bare"]["steady_items_per_s"])],
        }

    def broken(_ctx):
        raise ValueError("boom")

    results = {
        "command": "test",
        "machine": machine_info(),
        "comparisons": {
            "bare": run_comparison("bare", bare_only, ctx),
            "broken": run_comparison("broken", broken, ctx),
        },
    }
    data = json.loads(open(write_json(results, ctx.options.out), encoding="utf-8").read())
    assert data["machine"]["cpu_count"] >= 1 and data["machine"]["torch_version"].startswith("2.")
    bare = data["comparisons"]["bare"]
    assert bare["status"] == "ok" and bare["figures"]["self_ratio"]["of_medians"] == 2.0
    steady = bare["figures"]["bare"]["steady_items_per_s"]
    assert steady["min"] == steady["median"] == steady["max"] > 0
    assert data["comparisons"]["broken"]["status"] == "failed"
    assert data["comparisons"]["broken"]["error"] == "ValueError: boom"
    lines = table_lines(data)
    assert lines[2].startswith("| bare | bare steady | ") and "FAILED: ValueError: boom" in lines[3]


def test_profile_of_a_noop_run_names_the_selection(spark, tmp_path, capsys):
    from benchmarks.profile_job import main

    out = tmp_path / "out"
    assert main(["--scenario", "noop", "--items", "300", "--warmups", "0", "--out", str(out)]) == 0
    text = (out / "profile-noop-300" / "profile.txt").read_text(encoding="utf-8")
    assert "run_job" in text and "write_work_set" in text  # the tree reaches the selection
    printed = capsys.readouterr().out
    assert "profiled run:" in printed and ", 0 selected," in printed  # every item was current
    assert (out / "profile-noop-300" / "profile.html").stat().st_size > 1000


def test_marginal_rate_cancels_fixed_costs():
    from benchmarks.e2e import marginal_rate

    # 100 items in 30 s and 400 items in 60 s: 20 s of fixed cost, 10 items/s for the items added
    assert marginal_rate(300, {"total_s": 60.0}, {"total_s": 30.0}) == 10.0
    assert marginal_rate(300, {"total_s": 29.0}, {"total_s": 30.0}) is None  # noise larger than the work


@pytest.mark.usefixtures("ray_local")
def test_io_bound_sides_fetch_each_image_over_http_and_ask_the_llm_server_alike(spark, tmp_path, tiny_models):
    from benchmarks.io_bound import io_bound

    items = 6
    options = BenchOptions(
        out=str(tmp_path / "out"),
        model_size="tiny",
        repeats=1,
        image_pool=4,  # items 4 and 5 reuse the first two images: still one request per item
        io_items=items,
        io_image_delay_s=0.01,
        io_llm_delay_s=0.01,
        io_warmup_items=0,
        naive_partitions=2,
        fresh_ray=False,  # the session's Ray
    )
    ctx = BenchContext(options=options, spark=spark)
    ctx._models["tiny"] = tiny_models
    outcome = io_bound(ctx)
    figures = outcome["figures"]
    vlclip, naive = figures["vlclip"]["runs"][0], figures["naive"]["runs"][0]
    assert (vlclip["status"], vlclip["items_embedded"], naive["ok"]) == ("succeeded", items, items)
    assert vlclip["image_requests"] == vlclip["images_served"] == naive["image_requests"] == items
    # each side's own count of LLM calls is what the server answered, and both asked the same
    assert vlclip["llm_requests"] == vlclip["llm_calls"] == naive["llm_requests"] == naive["llm_calls"]
    assert vlclip["llm_calls"] >= 2 * items  # a summary and a verdict per item
    rows = {row["figure"]: row for row in outcome["headline"]}
    assert rows["image requests per run: naive"]["met"] and rows["LLM requests per run: naive"]["met"]
    assert rows["wall ratio naive/vlclip"]["median"] > 0
    for side in ("vlclip_stages", "naive_stages"):
        assert set(figures[side]) == {"decode", "grounding", "enrichment", "clip"}
        assert figures[side]["enrichment"]["busy_s"]["median"] > 0
    assert rows["vlclip busy s: decode"]["median"] == figures["vlclip_stages"]["decode"]["busy_s"]["median"]


def test_where_time_goes_reads_pipeline_stats_when_the_report_has_them():
    from benchmarks.stage_time import run_stages, stage_figures, stage_rows
    from vlclip_core.run.report import RunReport

    report = RunReport(run_id="r", mode="incremental", model_version="m", config_hash="h")
    report.stage_seconds = {"decode": 2.0, "clip": 5.0}
    assert run_stages(report) == {"decode": {"busy_s": 2.0}, "clip": {"busy_s": 5.0}}
    report.pipeline_stats = {"clip": {"actors_max": 2, "actor_seconds": 9.0, "busy_s": 6.0, "idle_s": 3.0}}
    stages = run_stages(report)
    assert stages["clip"] == {"busy_s": 6.0, "idle_s": 3.0, "actors_max": 2, "actor_seconds": 9.0}
    assert stages["decode"] == {"busy_s": 2.0}  # no pool figures: decode runs as tasks here
    other = {"stages": {"clip": {"busy_s": 8.0, "idle_s": 1.0}, "decode": {"busy_s": 4.0}}}
    figures = stage_figures([{"stages": stages}, other])
    assert figures["clip"]["busy_s"]["median"] == 7.0 and figures["clip"]["idle_s"]["max"] == 3.0
    assert [r["figure"] for r in stage_rows("vlclip", figures)] == [
        "vlclip busy s: decode",
        "vlclip busy s: clip",
        "vlclip pool idle s: clip",
    ]
