"""Fine-tuning VL-CLIP on the pipeline's grounded crops and enriched texts, and retrieval evaluation."""
