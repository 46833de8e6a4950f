"""Images the project draws itself (Pillow): coloured shapes on a plain background, with their captions.

No image data set can be downloaded here, so vision learning is proven on these: shape x colour classes ("a red
circle"), each image a fresh random size, position and background shade, so a held-out draw is a new image.
"""

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (40, 70, 220), "yellow": (235, 205, 20),
           "purple": (140, 40, 180)}
SHAPES = ("circle", "square", "triangle", "cross")


@dataclass(frozen=True)
class Drawn:
    image: Image.Image
    shape: str
    colour: str

    @property
    def caption(self) -> str:
        return caption(self.shape, self.colour)


def caption(shape: str, colour: str) -> str:
    return f"a {colour} {shape}"


def classes() -> list[tuple[str, str]]:
    """Every (shape, colour) pair, in a fixed order: the zero-shot label set."""
    return [(shape, colour) for shape in SHAPES for colour in COLOURS]


def draw(shape: str, colour: str, size: int, rng: random.Random) -> Image.Image:
    """One size x size RGB image of `shape` in `colour`, random extent and place, on a light grey background."""
    if shape not in SHAPES or colour not in COLOURS:
        raise ValueError(f"unknown shape {shape!r} or colour {colour!r}; shapes: {', '.join(SHAPES)}; "
                         f"colours: {', '.join(COLOURS)}")
    shade = rng.randint(200, 255)
    image = Image.new("RGB", (size, size), (shade, shade, shade))
    pen = ImageDraw.Draw(image)
    extent = rng.uniform(0.6, 0.95) * size
    x0, y0 = rng.uniform(0, size - extent), rng.uniform(0, size - extent)
    x1, y1 = x0 + extent, y0 + extent
    fill = tuple(min(255, max(0, c + rng.randint(-20, 20))) for c in COLOURS[colour])
    if shape == "circle":
        pen.ellipse((x0, y0, x1, y1), fill=fill)
    elif shape == "square":
        pen.rectangle((x0, y0, x1, y1), fill=fill)
    elif shape == "triangle":
        pen.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    else:
        bar = extent / 3
        pen.rectangle((x0 + bar, y0, x1 - bar, y1), fill=fill)
        pen.rectangle((x0, y0 + bar, x1, y1 - bar), fill=fill)
    return image


def draw_set(per_class: int, size: int, seed: int) -> list[Drawn]:
    """`per_class` images of every class, class-interleaved, reproducible from `seed`."""
    rng = random.Random(seed)
    return [Drawn(draw(shape, colour, size, rng), shape, colour)
            for _ in range(per_class) for shape, colour in classes()]
