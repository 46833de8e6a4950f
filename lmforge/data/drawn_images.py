"""Images the project draws itself (Pillow): coloured shapes on a plain background, with their captions.

No image data set can be downloaded here, so vision learning is proven on these: shape x colour classes ("a red
circle"), each image a fresh random size, position and background shade, so a held-out draw is a new image; and
scenes of 1-3 shapes in a 2 x 2 grid with captions and visual questions (shape, colour, how many, where).
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
    shade = rng.randint(200, 255)
    image = Image.new("RGB", (size, size), (shade, shade, shade))
    paint(ImageDraw.Draw(image), shape, colour, (0, 0), size, rng)
    return image


def paint(pen: ImageDraw.ImageDraw, shape: str, colour: str, corner: tuple[int, int], size: int,
          rng: random.Random) -> None:
    """`shape` in `colour` (jittered) inside the size x size box at `corner`: 60-95% of it, at a random place."""
    if shape not in SHAPES or colour not in COLOURS:
        raise ValueError(f"unknown shape {shape!r} or colour {colour!r}; shapes: {', '.join(SHAPES)}; "
                         f"colours: {', '.join(COLOURS)}")
    extent = rng.uniform(0.6, 0.95) * size
    x0, y0 = corner[0] + rng.uniform(0, size - extent), corner[1] + rng.uniform(0, size - extent)
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


def draw_set(per_class: int, size: int, seed: int) -> list[Drawn]:
    """`per_class` images of every class, class-interleaved, reproducible from `seed`."""
    rng = random.Random(seed)
    return [Drawn(draw(shape, colour, size, rng), shape, colour)
            for _ in range(per_class) for shape, colour in classes()]


# ---- scenes for visual question answering (lmforge vlm): counts and positions ----

COUNTS = ("one", "two", "three")
PLACES = ("top left", "top right", "bottom left", "bottom right")  # the 2 x 2 cells of a scene
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
DESCRIBE = "Describe the image briefly."
QUESTIONS = {"shape": "What shape is in the image?", "colour": "What colour are the shapes?",
             "count": "How many shapes are there?", "where": "Where is the shape?"}


@dataclass(frozen=True)
class Scene:
    """1-3 copies of one shape in one colour, each in its own cell of a 2 x 2 grid (`cells`: indices of PLACES)."""

    image: Image.Image
    shape: str
    colour: str
    cells: tuple[int, ...]

    @property
    def caption(self) -> str:
        """"a red circle in the top left" / "two red circles"."""
        if len(self.cells) == 1:
            return f"{caption(self.shape, self.colour)} in the {PLACES[self.cells[0]]}"
        return f"{COUNTS[len(self.cells) - 1]} {self.colour} {PLURAL[self.shape]}"

    def qa(self) -> list[tuple[str, str, str]]:
        """(kind, question, one- or two-word answer): shape, colour, count, and where (single shapes only)."""
        out = [("shape", QUESTIONS["shape"], self.shape), ("colour", QUESTIONS["colour"], self.colour),
               ("count", QUESTIONS["count"], COUNTS[len(self.cells) - 1])]
        if len(self.cells) == 1:
            out.append(("where", QUESTIONS["where"], PLACES[self.cells[0]]))
        return out


def draw_scene(shape: str, colour: str, cells: tuple[int, ...], size: int, rng: random.Random) -> Image.Image:
    """A size x size scene: `shape` painted as `draw` does, at half scale, in each of `cells` (2 x 2 grid)."""
    shade = rng.randint(200, 255)
    image = Image.new("RGB", (size, size), (shade, shade, shade))
    pen, half = ImageDraw.Draw(image), size // 2
    for cell in cells:
        paint(pen, shape, colour, ((cell % 2) * half, (cell // 2) * half), half, rng)
    return image


def scene_set(n: int, size: int, seed: int, exclude: frozenset[bytes] = frozenset()) -> list[Scene]:
    """`n` scenes, reproducible from `seed`: shape, colour, count (1-3) and cells drawn at random; a scene whose
    pixels equal one in `exclude` (another split's, see scene_keys) is drawn again, so splits are disjoint."""
    rng = random.Random(seed)
    out: list[Scene] = []
    while len(out) < n:
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        cells = tuple(sorted(rng.sample(range(len(PLACES)), rng.randint(1, len(COUNTS)))))
        scene = Scene(draw_scene(shape, colour, cells, size, rng), shape, colour, cells)
        if scene.image.tobytes() not in exclude:
            out.append(scene)
    return out


def scene_keys(scenes: list[Scene]) -> frozenset[bytes]:
    return frozenset(s.image.tobytes() for s in scenes)
