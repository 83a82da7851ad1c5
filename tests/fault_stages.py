"""Stage classes that misbehave on purpose, plugged in through `stages.<name>.impl` by the fault tests."""

from __future__ import annotations

import os
import time

from vlclip_core import schema as S
from vlclip_core.stages.enrichment import EnrichmentStage
from vlclip_core.stages.grounding import GroundingStage


def _titles(batch, idx):
    return [str(batch[S.TITLE][i] or "") for i in idx]


class KillingGrounding(GroundingStage):
    """Kills its own actor process on a POISON title: every time for POISON-ALWAYS, once for POISON-ONCE.

    "Once" is remembered by a marker file next to the item's image, so the restarted actor goes on.
    """

    def process(self, batch, idx, out):
        for i, title in zip(idx, _titles(batch, idx)):
            marker = f"{batch[S.IMAGE_URI][i]}.killed"
            if "POISON-ALWAYS" in title or ("POISON-ONCE" in title and not os.path.exists(marker)):
                open(marker, "w").close()
                os._exit(17)
        super().process(batch, idx, out)


class SleepingEnrichment(EnrichmentStage):
    """Hangs (for an hour) on any batch with a SLEEP title, like an LLM call that never returns."""

    def process(self, batch, idx, out):
        if any("SLEEP" in t for t in _titles(batch, idx)):
            time.sleep(3600)
        super().process(batch, idx, out)
