"""Re-make the README's and the docs' pictures from the real packs: `.venv/bin/python assets/make_pictures.py`."""

from pathlib import Path

import aigc
from aigc.media.sheets import contact_sheet

here = Path(__file__).parent
faces = aigc.generate("image", "portrait", backend="gan", n=8, seed=1, size=128, upscale_filter="lanczos")
contact_sheet([a.data for a in faces], columns=8).save(here / "gan-faces.png")
aigc.interpolate(3, 7, frames=8, size=128).data.save(here / "gan-interpolation.png")
print("wrote", here / "gan-faces.png", here / "gan-interpolation.png")

# the scorer steering the unconditional GAN: seeds 10-13, before and after 30 refinement steps
prompt = "a person wearing sunglasses"
before = aigc.generate("image", prompt, backend="gan", n=4, seed=10, size=128)
after = aigc.generate("image", prompt, backend="gan", n=4, seed=10, size=128, refine=30)
contact_sheet([a.data for a in before + after], columns=4).save(here / "gan-refine.png")
print("wrote", here / "gan-refine.png")

# editing, made without diffusion weights: what the knobs do to pixels before any model repaints them. A face, a
# mask over its eyes, that mask with mask_blur=4, the outpaint canvas (32 px a side, the border's colours under
# noise), then the control maps of the face: canny, scribble, tile, invert
from PIL import Image, ImageDraw  # noqa: E402

from aigc.generators.image import control_maps, edits  # noqa: E402

face = faces[0].data.convert("RGB")
mask = Image.new("L", face.size, 0)
ImageDraw.Draw(mask).ellipse((24, 40, 104, 76), fill=255)
canvas, _ = edits.grow(face, None, (32, 32, 32, 32))
panels = [face, mask.convert("RGB"), edits.soften(mask, 4).convert("RGB"), canvas.resize(face.size)]
panels += [control_maps.make(name, face) for name in ("canny", "scribble", "tile", "invert")]
contact_sheet(panels, columns=8).save(here / "editing.png")
print("wrote", here / "editing.png")
