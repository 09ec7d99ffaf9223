"""Evaluation: reconstruction metrics (PSNR, SSIM, side-by-side grids) and
pixel-level checks of Moving Shapes clips against their ground truth.

    metrics   psnr, ssim, Mean (batch aggregation), side_by_side
    shapes    measure (attributes read from pixels), check, attribute_accuracy
"""
