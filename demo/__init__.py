"""Offline demo: a procedural image–caption world, a micro-CLIP pretrained on it, demo datasets."""
