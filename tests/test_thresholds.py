"""A run's thresholds: which failure and fallback shares breach job.thresholds."""

from __future__ import annotations

from vlclip_core.config import load_config
from vlclip_core.run.thresholds import breaches


def _thresholds(*overrides):
    return load_config("conf/tiny.yaml", overrides).job.thresholds


def test_a_clean_run_breaches_nothing():
    outcomes = {"embedded": 40, "embedded_ungrounded": 40, "embedded_text_fallback": 40, "failed_decode": 2}
    assert breaches(_thresholds(), 50, 42, outcomes) == []


def test_each_stage_and_all_stages_together_are_checked():
    outcomes = {"embedded": 10, "failed_grounding": 6, "failed_clip": 5, "failed_catalog": 30}
    assert breaches(_thresholds(), 51, 21, outcomes) == [
        "failed at any: 11/21 (52%) > 50%",
        "failed at catalog: 30/51 (59%) > 50%",
    ]
    found = breaches(_thresholds("job.thresholds.max_failed.grounding=0.25"), 51, 21, outcomes)
    assert found == [
        "failed at grounding: 6/21 (29%) > 25%",
        "failed at any: 11/21 (52%) > 50%",
        "failed at catalog: 30/51 (59%) > 50%",
    ]


def test_fallback_shares_are_of_the_embedded_items():
    outcomes = {"embedded": 20, "embedded_ungrounded": 15, "embedded_text_fallback": 4}
    cfg = _thresholds(
        "job.thresholds.max_fallback.grounding=0.7", "job.thresholds.max_fallback.enrichment=0.2"
    )
    assert breaches(cfg, 20, 20, outcomes) == ["grounding fallback: 15/20 (75%) > 70%"]


def test_small_runs_get_no_verdict():
    outcomes = {"embedded": 0, "failed_decode": 9}
    assert breaches(_thresholds(), 9, 9, outcomes) == []
    assert breaches(_thresholds("job.thresholds.min_items=1"), 9, 9, outcomes) == [
        "failed at decode: 9/9 (100%) > 50%",
        "failed at any: 9/9 (100%) > 50%",
    ]


def test_fallbacks_caused_by_llm_errors_breach_a_small_default_share():
    outcomes = {"embedded": 20, "embedded_text_fallback": 2, "embedded_llm_error": 2}
    assert breaches(_thresholds(), 20, 20, outcomes) == ["llm_error fallback: 2/20 (10%) > 5%"]
    assert breaches(_thresholds(), 20, 20, dict(outcomes, embedded_llm_error=1)) == []


def test_items_skipped_because_their_image_failed_for_good_count_as_decode_failures():
    outcomes = {"embedded": 8, "skipped_failed_image": 12}
    assert breaches(_thresholds(), 20, 20, outcomes) == [
        "failed at decode: 12/20 (60%) > 50%",
        "failed at any: 12/20 (60%) > 50%",
    ]
