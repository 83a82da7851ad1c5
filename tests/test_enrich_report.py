"""Tests of the enrichment quality report against a scripted OpenAI-compatible server on 127.0.0.1."""

import json

from llm_server_helpers import FakeLLMServer, step_of

from vlclip_core.config import load_config
from vlclip_core.tools.enrich_report import read_items, run_report

ECHO = "Catalog data: a red cotton dress in size M."
LOOP = "A blue wool scarf, a blue wool scarf, a blue wool scarf in size L."
DRESS = "A red cotton dress in size M, knee length, for summer days."
SCARF = "A blue wool scarf in size L, warm and soft."
COAT = "A black <b>wool</b> coat in size S with two pockets."
PASS = json.dumps({"pass": True, "missing": [], "reasons": []})
ITEMS = [
    {"item_id": "a", "title": "Red dress <script>alert(1)</script>", "description": "Knee length.",
     "product_type": "dress", "attributes": {"colour": "red", "size": "M"}},
    {"item_id": "b", "title": "Blue scarf", "description": "Warm.", "product_type": "scarf",
     "attributes": {"colour": "blue", "size": "L"}},
    {"item_id": "c", "title": "Black coat", "description": "Two pockets.", "product_type": "coat",
     "attributes": {"colour": "black", "size": "S"}},
]


def respond(messages):
    """A model whose evaluation passes everything: an echo for the dress, a loop for the scarf."""
    step, user = step_of(messages), messages[-1]["content"]
    if step == "evaluate":
        return PASS
    if "Blue scarf" in user:
        return LOOP
    if "Red dress" in user:
        return ECHO if step == "summarise" else DRESS
    return COAT


def _config(server, tmp_path):
    return load_config(
        "conf/tiny.yaml",
        (
            "models.llm.backend=openai",
            f"models.llm.base_url={server.base_url}",
            "models.llm.model=m",
            "models.llm.retries=0",
            f"catalog.path={tmp_path}/none",
        ),
    )


def test_report_counts_what_the_checks_rejected_and_shows_it(tmp_path):
    with FakeLLMServer(respond) as server:
        report = run_report(_config(server, tmp_path), ITEMS, str(tmp_path / "out"), sample=3)
    assert report["status_counts"] == {"refined": 1, "fallback": 1, "ok": 1}
    assert report["check_failures"] == {"repetition": 2, "prompt_echo": 1}
    assert (report["accepted"], report["echo_rate"], report["repetition_rate"]) == (2, 0.0, 0.0)
    assert report["attribute_coverage"] == 1.0
    assert (report["words_median"], report["words_max"]) == (11.0, 12)
    assert report["llm_calls"] == 8  # dress and scarf: summarise, evaluate, refine; coat: two calls
    # no tokenizer behind an endpoint: words; the three verdicts count too
    replies = (ECHO, DRESS, COAT, LOOP, LOOP, PASS, PASS, PASS)
    assert report["generated_tokens"] == sum(len(t.split()) for t in replies)
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<script>" not in page and "Red dress &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "A black wool coat in size S with two pockets." in page  # the enriched text, cleaned
    assert page.count("<tr><td>") == 3
    items = [json.loads(line) for line in (tmp_path / "out" / "items.jsonl").read_text().splitlines()]
    assert [i["result"]["status"] for i in items] == ["refined", "fallback", "ok"]
    assert items[0]["result"]["checks"] == ["prompt_echo: repeats the prompt label Catalog data:"]
    assert len((tmp_path / "out" / "replies.jsonl").read_text().splitlines()) == 8


def test_items_are_read_from_the_profiles_catalog(spark, sample_root):
    config = load_config("conf/tiny.yaml", (f"catalog.path={sample_root}/catalog",))
    items = read_items(spark, config, 3)
    assert [i["item_id"] for i in items] == ["SKU-000000", "SKU-000001", "SKU-000002"]
    assert all(i["title"] and isinstance(i["attributes"], dict) and i["attributes"] for i in items)
