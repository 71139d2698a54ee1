"""Rendering styles ("domains"): one frozen :class:`SynthStyle` per named preset.

A style holds every knob that shifts the image distribution -- palettes, background
kinds, the pose mix, the camera, blur / noise / lighting and the crowd -- so a
domain-shifted set is one row here, not a code path. Colours are BGR (OpenCV order).
"""

from __future__ import annotations

from dataclasses import dataclass

Color = tuple[int, int, int]


@dataclass(frozen=True)
class Palette:
    """Colour choices for figures; each person draws one entry per field."""

    skin: tuple[Color, ...]
    shirts: tuple[Color, ...]
    trousers: tuple[Color, ...]
    shoes: tuple[Color, ...]
    hair: tuple[Color, ...]


SKIN_TONES: tuple[Color, ...] = (
    (189, 214, 244),
    (163, 196, 234),
    (134, 171, 222),
    (110, 150, 198),
    (84, 120, 170),
    (62, 92, 140),
    (45, 66, 104),
    (150, 190, 240),
    (120, 160, 214),
    (72, 104, 150),
)
HAIR: tuple[Color, ...] = (
    (20, 20, 25),
    (30, 45, 70),
    (40, 70, 110),
    (70, 120, 170),
    (150, 150, 150),
    (25, 30, 40),
    (60, 90, 150),
    (35, 35, 35),
)
SHOES: tuple[Color, ...] = ((25, 25, 25), (60, 60, 60), (230, 230, 230), (40, 60, 90), (120, 120, 130))

CASUAL = Palette(
    skin=SKIN_TONES,
    shirts=(
        (200, 80, 40),
        (40, 40, 200),
        (60, 160, 60),
        (220, 220, 220),
        (30, 30, 30),
        (0, 180, 230),
        (150, 60, 130),
        (180, 140, 90),
        (90, 90, 160),
        (40, 120, 200),
        (200, 200, 80),
        (120, 60, 30),
    ),
    trousers=(
        (120, 60, 30),
        (50, 40, 30),
        (30, 30, 30),
        (140, 140, 140),
        (90, 110, 130),
        (60, 90, 60),
        (180, 150, 120),
        (40, 50, 110),
    ),
    shoes=SHOES,
    hair=HAIR,
)
INDOOR = Palette(  # muted office / home clothing
    skin=SKIN_TONES,
    shirts=(
        (110, 100, 95),
        (160, 150, 140),
        (70, 60, 90),
        (90, 110, 120),
        (200, 195, 190),
        (60, 70, 60),
        (130, 110, 150),
    ),
    trousers=((45, 40, 40), (80, 70, 65), (110, 100, 90), (60, 55, 75)),
    shoes=SHOES,
    hair=HAIR,
)
SPORTS = Palette(  # saturated jerseys and shorts
    skin=SKIN_TONES,
    shirts=(
        (0, 0, 230),
        (230, 60, 0),
        (0, 200, 255),
        (0, 200, 0),
        (255, 255, 255),
        (180, 0, 180),
        (0, 120, 255),
        (255, 200, 0),
    ),
    trousers=((255, 255, 255), (20, 20, 20), (0, 0, 160), (160, 40, 0), (0, 110, 0)),
    shoes=((255, 255, 255), (0, 0, 200), (20, 20, 20), (0, 220, 255)),
    hair=HAIR,
)
DRAB = Palette(  # dark, desaturated street clothing
    skin=SKIN_TONES,
    shirts=((50, 50, 50), (80, 75, 70), (60, 65, 80), (100, 100, 100), (40, 50, 45), (90, 80, 100)),
    trousers=((30, 30, 30), (60, 55, 50), (70, 70, 80), (45, 45, 60)),
    shoes=((20, 20, 20), (50, 50, 50)),
    hair=HAIR,
)


@dataclass(frozen=True)
class SynthStyle:
    """Every knob of one rendering domain.

    Angles are degrees; ``scale`` is a person's standing height as a fraction of the
    image height; ``poses`` maps a pose kind of :data:`sagepose.data.synth.poses.POSE_KINDS`
    to its sampling weight. ``blur`` is the largest Gaussian sigma in px (applied with
    probability ``blur_prob``), ``noise`` the largest sensor-noise std in grey levels.
    """

    name: str
    palette: Palette = CASUAL
    backgrounds: tuple[str, ...] = ("gradient", "clouds", "stripes", "tiles", "shapes", "outdoor")
    clutter: tuple[int, int] = (0, 6)  # random distractor shapes added on top of the background
    poses: tuple[tuple[str, float], ...] = (
        ("stand", 3.0),
        ("walk", 3.0),
        ("arms_up", 2.0),
        ("sit", 1.0),
        ("crouch", 0.7),
        ("kneel", 0.5),
        ("lie", 0.5),
    )
    pose_spread: float = 1.0  # multiplies the joint-angle jitter
    roll_std: float = 6.0  # in-plane body roll of upright poses
    people: tuple[int, int] = (1, 4)
    scale: tuple[float, float] = (0.25, 0.95)
    tilt: tuple[float, float] = (-5.0, 15.0)  # camera elevation: > 0 looks down on people
    camera_roll: float = 3.0
    occluder_rate: float = 0.25  # probability that a person gets an occluder in front of it
    blur: float = 1.2
    blur_prob: float = 0.4
    motion_blur_prob: float = 0.1
    noise: float = 6.0
    brightness: tuple[float, float] = (0.8, 1.2)
    contrast: tuple[float, float] = (0.8, 1.2)


STYLES: dict[str, SynthStyle] = {
    s.name: s
    for s in (
        SynthStyle(name="default"),
        SynthStyle(
            name="indoor",
            palette=INDOOR,
            backgrounds=("tiles", "room", "gradient"),
            clutter=(2, 8),
            poses=(
                ("stand", 2.0),
                ("walk", 1.0),
                ("sit", 3.0),
                ("crouch", 1.0),
                ("arms_up", 1.0),
                ("kneel", 1.0),
            ),
            occluder_rate=0.45,
            brightness=(0.45, 0.85),
            noise=9.0,
        ),
        SynthStyle(
            name="sports",
            palette=SPORTS,
            backgrounds=("outdoor", "stripes", "gradient", "clouds"),
            poses=(("walk", 2.0), ("arms_up", 2.0), ("random", 4.0), ("crouch", 1.0), ("lie", 1.0)),
            pose_spread=1.8,
            roll_std=25.0,
            camera_roll=6.0,
            motion_blur_prob=0.35,
            blur=1.8,
        ),
        SynthStyle(
            name="surveillance",
            palette=DRAB,
            backgrounds=("outdoor", "room", "clouds", "tiles"),
            clutter=(3, 10),
            poses=(("stand", 3.0), ("walk", 5.0), ("sit", 0.5), ("crouch", 0.5)),
            people=(2, 6),
            scale=(0.18, 0.45),
            tilt=(20.0, 45.0),
            camera_roll=8.0,
            occluder_rate=0.35,
            blur=2.2,
            blur_prob=0.8,
            noise=14.0,
            brightness=(0.55, 1.0),
            contrast=(0.6, 0.95),
        ),
    )
}


def get_style(style: str | SynthStyle) -> SynthStyle:
    if isinstance(style, SynthStyle):
        return style
    try:
        return STYLES[style]
    except KeyError:
        raise KeyError(f"unknown synth style {style!r}; known: {sorted(STYLES)}") from None
