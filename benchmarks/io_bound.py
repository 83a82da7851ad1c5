"""Prod-like I/O: images behind a loopback CDN with latency, the LLM behind a slow OpenAI-compatible server.

vlclip and the naive mapInPandas job run side by side on the same catalog, whose image_uri point at the
image server, with the LLM stage on the OpenAI-compatible backend; both sides call the same two servers,
whose request counts show that they did the same work.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Tuple

import pyarrow as pa

from benchmarks.context import BenchContext, summarise
from benchmarks.loopback import FakeLLMServer, ImageServer, answer_each_step
from benchmarks.measure import ratio
from benchmarks.report import at_least, headline
from benchmarks.stage_time import stage_figures, stage_rows
from vlclip_core import schema as S
from vlclip_core.tools.sample_catalog import read_catalog, write_catalog

log = logging.getLogger(__name__)

LLM_MODEL = "bench-llm"


def io_bound(ctx: BenchContext) -> dict:
    """vlclip vs the naive job with every image fetched over HTTP and every LLM call to a service.

    A repeat is one vlclip run and one naive run on opts.io_items items, fresh outputs each; the goal
    is naive wall / vlclip wall >= 2. Each run's requests to the image and LLM servers are counted.
    """
    opts = ctx.options
    table = read_catalog(ctx.catalog(opts.io_items))
    with ImageServer(image_root(table), opts.io_image_delay_s) as images, FakeLLMServer(
        responder=answer_each_step, delay_s=opts.io_llm_delay_s
    ) as llm:
        catalog = http_catalog(table, images, ctx.work_dir("io-catalog"))
        overrides = io_overrides(images, llm)
        vlclip_run = vlclip_runner(ctx, overrides)
        naive_run = naive_runner(ctx, overrides)
        if opts.io_warmup_items:
            # Untimed warm-ups of both sides: imports, Spark's Python workers, the first connections.
            warmup = table.slice(0, opts.io_warmup_items)
            warmup = http_catalog(warmup, images, ctx.work_dir("io-catalog-warmup"))
            vlclip_run(warmup, "io-vl-warmup")
            naive_run(warmup, "io-naive-warmup")
        vlclip, naive = [], []
        for r in range(opts.repeats):
            vlclip.append(counted(images, llm, lambda: vlclip_run(catalog, f"io-vl-{r}")))
            naive.append(counted(images, llm, lambda: naive_run(catalog, f"io-naive-{r}")))
            log.info(
                "io repeat %d: vlclip %.1fs, naive %.1fs", r, vlclip[-1]["total_s"], naive[-1]["total_s"]
            )
    return io_outcome(ctx, vlclip, naive)


def vlclip_runner(ctx: BenchContext, overrides: Tuple[str, ...]) -> Callable[[str, str], dict]:
    def run(catalog: str, name: str) -> dict:
        return ctx.timed_job(ctx.job_config(catalog, ctx.work_dir(name), ctx.options.model_size, *overrides))

    return run


def naive_runner(ctx: BenchContext, overrides: Tuple[str, ...]) -> Callable[[str, str], dict]:
    def run(catalog: str, name: str) -> dict:
        return ctx.timed_naive(catalog, ctx.options.model_size, name, *overrides)

    return run


def image_root(table: pa.Table) -> str:
    """The directory that holds every image file of the catalog (what the image server serves)."""
    root = os.path.commonpath([os.path.realpath(p) for p in table.column(S.IMAGE_URI).to_pylist()])
    return os.path.dirname(root) if os.path.isfile(root) else root


def http_catalog(table: pa.Table, images: ImageServer, path: str) -> str:
    """The catalog with each image_uri rewritten to the image server's URL of that file."""
    uris = pa.array([images.url_of(p) for p in table.column(S.IMAGE_URI).to_pylist()], pa.string())
    index = table.schema.get_field_index(S.IMAGE_URI)
    return write_catalog(table.set_column(index, table.schema.field(index), uris), path)


def io_overrides(images: ImageServer, llm: FakeLLMServer) -> Tuple[str, ...]:
    """Config of both sides: the LLM on the OpenAI-compatible backend, the image server's host allowed.

    The enrichment actors are then HTTP clients and ask for the CPU share of one (0.05), as an
    operator configures a service-backed stage (conf/prod.yaml), so their pool can grow to overlap the
    service's latency; the naive job has no per-stage resources and ignores it.
    """
    return (
        "models.llm.backend=openai",
        f"models.llm.base_url={llm.base_url}",
        f"models.llm.model={LLM_MODEL}",
        f'images.allowed_hosts=["{images.host_port}"]',
        "stages.enrichment.num_cpus=0.05",
    )


def counted(images: ImageServer, llm: FakeLLMServer, run: Callable[[], dict]) -> dict:
    """run() with the requests it made to each server, and the most it had in flight at once."""
    before = {"images": images.counts(), "llm": llm.counts()}
    images.reset_peak()
    llm.reset_peak()
    result = run()
    after = {"images": images.counts(), "llm": llm.counts()}
    result["image_requests"] = after["images"]["requests"] - before["images"]["requests"]
    result["images_served"] = after["images"]["served"] - before["images"]["served"]
    result["llm_requests"] = after["llm"]["requests"] - before["llm"]["requests"]
    result["image_max_in_flight"] = after["images"]["max_in_flight"]
    result["llm_max_in_flight"] = after["llm"]["max_in_flight"]
    return result


COUNT_KEYS = ("image_requests", "images_served", "llm_requests", "image_max_in_flight", "llm_max_in_flight")


def io_outcome(ctx: BenchContext, vlclip: list, naive: list) -> dict:
    """Figures and headline rows of io_bound from its paired runs."""
    opts = ctx.options
    wall = ratio([n["total_s"] for n in naive], [v["total_s"] for v in vlclip])
    figures = {
        "items": opts.io_items,
        "model_size": opts.model_size,
        "image_delay_s": opts.io_image_delay_s,
        "llm_delay_s": opts.io_llm_delay_s,
        "vlclip": summarise(vlclip, ("total_s", "first_batch_s") + COUNT_KEYS),
        "naive": summarise(naive, ("total_s", "first_batch_s") + COUNT_KEYS),
        "wall_ratio_naive_over_vlclip": wall,
        "vlclip_stages": stage_figures(vlclip),
        "naive_stages": stage_figures(naive),
    }
    pairs = list(zip(vlclip, naive))
    same_images = all(v["image_requests"] == n["image_requests"] == opts.io_items for v, n in pairs)
    same_llm = all(v["llm_requests"] == n["llm_requests"] for v, n in pairs)
    rows = [
        headline(f"vlclip wall, {opts.io_items} items", figures["vlclip"]["total_s"], "s"),
        headline(f"naive mapInPandas wall, {opts.io_items} items", figures["naive"]["total_s"], "s"),
        headline("wall ratio naive/vlclip", wall, "x", ">= 2", at_least(wall, 2.0)),
        headline("image requests per run: vlclip", figures["vlclip"]["image_requests"], "req"),
        headline(
            "image requests per run: naive", figures["naive"]["image_requests"], "req", "= items", same_images
        ),
        headline("LLM requests per run: vlclip", figures["vlclip"]["llm_requests"], "req"),
        headline(
            "LLM requests per run: naive", figures["naive"]["llm_requests"], "req", "= vlclip's", same_llm
        ),
        headline("LLM requests in flight (max): vlclip", figures["vlclip"]["llm_max_in_flight"], "req"),
        headline("LLM requests in flight (max): naive", figures["naive"]["llm_max_in_flight"], "req"),
    ]
    rows += stage_rows("vlclip", figures["vlclip_stages"]) + stage_rows("naive", figures["naive_stages"])
    return {"figures": figures, "headline": rows}
