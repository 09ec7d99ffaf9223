"""Diffusion: noise processes and losses (flow), conditioning masks (masks), samplers."""
