"""vlclip: VL-CLIP catalog embeddings as a Spark + Ray batch pipeline."""
