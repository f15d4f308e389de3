"""Live viewers for the pipeline's published outputs (optional third-party tools, imported lazily)."""
