"""Pretrained image models as the base generator: their folders, noise processes and text encoders."""
