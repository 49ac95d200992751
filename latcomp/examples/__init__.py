"""Small example images shipped with latcomp, for the docs and a first try: "photos" at their own size
(150 x 180, not the model's 64 x 64), rendered from the procedural faces (latcomp.data.faces seeds 3 and 14 at
180 px, cropped to 150 columns).

    face.png       a face, RGB
    holes.png      its mask: 255 = keep, 0 = fill (the mouth and chin)
    face_rgba.png  the face with the hole transparent (the alpha channel is the mask)
    eyes.png       a second face, RGB
    eyes_mask.png  its eyes and brows (255), to paste onto the first face as a composite layer

`latcomp examples DIR` copies them to DIR; `latcomp.examples.path(name)` is where one lies.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
NAMES = ("face.png", "holes.png", "face_rgba.png", "eyes.png", "eyes_mask.png")


def path(name: str) -> Path:
    """The shipped example image `name` (one of NAMES)."""
    if name not in NAMES:
        raise ValueError(f"no example image {name!r}; there are {', '.join(NAMES)}")
    return FOLDER / name


def cmd_examples(args: argparse.Namespace) -> int:
    target = Path(args.dir)
    try:
        target.mkdir(parents=True, exist_ok=True)
        for name in NAMES:
            shutil.copyfile(path(name), target / name)
    except OSError as error:
        print(f"latcomp examples: {error}", file=sys.stderr)
        return 2
    print(f"wrote {', '.join(NAMES)} to {target}")
    return 0


def register(commands) -> None:
    examples = commands.add_parser(
        "examples",
        help="copy the example images (a face, its hole mask, a face with a transparent hole, eyes) to DIR",
        description="Copy the small example images shipped with latcomp to DIR: face.png (150 x 180), "
        "holes.png (its mask: 255 = keep, 0 = fill), face_rgba.png (the face with the hole transparent), "
        "eyes.png and eyes_mask.png (a second face and its eyes and brows, a composite layer).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    examples.add_argument("dir", nargs="?", default=".", help="where to write them")
    examples.set_defaults(run=cmd_examples)
