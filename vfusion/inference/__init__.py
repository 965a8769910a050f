"""Inference: the diffusers-style :class:`VideoFusionPipeline` and batched generation from it."""
