"""Image metrics shared by hub and site: Fréchet distance, SSIM and friends."""

__all__: list[str] = []
