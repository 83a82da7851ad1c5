"""The stage actors as Ray builds them, each in a fresh process: what they import and their threads."""

from __future__ import annotations

import json
import subprocess
import sys

from vlclip_core.models.tiny import tiny_overrides

ACTOR_PROCESS = """
import json, sys
from vlclip_core.config import load_config
from vlclip_core.pipeline import actors

config = load_config(sys.argv[3], tuple(json.loads(sys.argv[1])))
actor = getattr(actors, sys.argv[2])(config, 3)
torch = sys.modules.get("torch")
print(json.dumps({"torch": torch is not None, "threads": torch.get_num_threads() if torch else None}))
"""


def actor_process(actor: str, *overrides: str, profile: str = "conf/tiny.yaml") -> dict:
    """Build `actor` (its stage and model) in a new Python, as a Ray worker does, with 3 threads."""
    done = subprocess.run(
        [sys.executable, "-c", ACTOR_PROCESS, json.dumps(overrides), actor, profile],
        capture_output=True, text=True, timeout=300, check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_enrichment_actor_on_an_llm_service_never_imports_torch_and_model_actors_get_their_threads(
    tiny_models,
):
    service = (
        "models.llm.backend=openai", "models.llm.base_url=http://127.0.0.1:9/v1", "models.llm.model=m"
    )
    base = tiny_overrides(tiny_models) + ("catalog.path=unused",)
    assert actor_process("EnrichmentActor", *base, *service) == {"torch": False, "threads": None}
    assert actor_process("ClipActor", *base) == {"torch": True, "threads": 3}
    assert actor_process("FusedActor", *base) == {"torch": True, "threads": 3}


def test_the_null_profiles_actors_never_import_torch():
    """The null models are hashes: a fused actor of conf/null.yaml that imported torch and open_clip would
    add their ~8 s of imports to every actor's start, which `make bench-scale` would count as vlclip's."""
    null = ("catalog.path=unused",)
    assert actor_process("FusedActor", *null, profile="conf/null.yaml") == {"torch": False, "threads": None}
