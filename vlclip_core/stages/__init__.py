"""Ray Data pipeline stages: decode, grounding, enrichment, CLIP encoding."""
