"""Networks as plain linen modules: the causal video VAE and its discriminator.

Objectives (losses, noise, samplers) live elsewhere (`vidgen.trainers`,
`vidgen.diffusion`); modules here only map arrays to arrays and name the
logical axes of their parameters (`vidgen.parallel.axes`).
"""
