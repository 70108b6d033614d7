"""Image backends: the DCGAN (gan.py, dcgan.py) and Stable Diffusion through diffusers
(diffusion.py), with aigc's own denoising loop (denoise.py)."""
