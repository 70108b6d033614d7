"""What aigc makes and reads back: the Asset record and its files (assets.py), one row per file format
(formats.py), audio clips (audio.py), WAV tags, contact sheets, and the GAN's latent prior file."""
