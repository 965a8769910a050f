"""Pretrained image backbones a video model starts from (diffusers pipeline folders: pixel UNets,
Stable Diffusion, DiT, PixArt, flow-matching models) and what they need around them. Submodules import
diffusers / transformers only inside functions, so importing this package costs nothing.
"""
