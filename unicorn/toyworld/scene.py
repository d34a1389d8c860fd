"""Scene specs of the toy shapes world: what a prompt asks for, as dataclasses serialisable to JSON."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

SCENE_VERSION = 1

CATEGORIES = ("attribute", "counting", "spatial", "interaction", "text", "style", "scene", "knowledge", "imagination")
UNSUPPORTED_CATEGORIES = ("living",)  # no people or animals in a world of flat shapes

SHAPES = ("circle", "square", "triangle", "diamond")  # triangles always point up
SIZES = ("small", "medium", "large")
SIZE_FRACTION = {"small": 0.14, "medium": 0.21, "large": 0.30}  # bounding-box side / image side
STYLES = ("filled", "outline")

# Saturated colours for objects and text; every pair is >= 90 apart in RGB.
OBJECT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (250, 140, 0),
    "yellow": (250, 230, 0),
    "green": (30, 170, 30),
    "cyan": (0, 200, 220),
    "blue": (30, 60, 230),
    "purple": (140, 40, 200),
    "brown": (130, 70, 20),
}
# Background colours never appear on objects, so a pixel's colour alone says object or background.
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
    "black": (0, 0, 0),
    "sky blue": (150, 205, 250),
    "sand": (205, 185, 140),
    "navy": (15, 20, 60),
    "charcoal": (70, 70, 70),
}
PLAIN_BACKGROUNDS = ("white", "gray", "black")
TWO_TONE_SCENES = {"day": ("sky blue", "sand"), "night": ("navy", "charcoal")}  # (sky, ground)
HORIZON = 0.6  # fraction of the height where the sky ends and the ground begins

TEXT_BANDS = ("top", "middle", "bottom")
TEXT_BAND_CENTRE = {"top": 0.2, "middle": 0.5, "bottom": 0.8}  # fraction of the height (3-px glyphs keep 2 px off the edge)
# Text prompts write real words half the time ("the word 'CAT'"), random letters otherwise.
WORDS = ("CAT", "DOG", "SUN", "SKY", "BOX", "TOY", "RUN", "ZIP", "HI", "OK", "GO", "UP", "NO", "YES", "MAP", "JAM")
SPATIAL_RELATIONS = ("left of", "right of", "above", "below")
INTERACTION_RELATIONS = ("touching", "inside")
RELATIONS = SPATIAL_RELATIONS + INTERACTION_RELATIONS
ATTRIBUTES = ("colour", "shape", "size")
REGIONS = ("sky", "ground")

# World knowledge a prompt may leave implicit: reference key -> (value, phrase).
KNOWLEDGE: dict[str, dict[str, tuple[object, str]]] = {
    "colour": {
        "tomato": ("red", "the colour of a ripe tomato"),
        "fire_truck": ("red", "the colour of a fire truck"),
        "orange_fruit": ("orange", "the colour of the fruit that shares its name with a colour"),
        "banana": ("yellow", "the colour of a ripe banana"),
        "lemon": ("yellow", "the colour of a lemon"),
        "grass": ("green", "the colour of fresh grass"),
        "frog": ("green", "the colour of a tree frog"),
        "turquoise": ("cyan", "the colour of a tropical lagoon"),
        "ocean": ("blue", "the colour of the deep ocean on a map"),
        "grape": ("purple", "the colour of a grape used for red wine"),
        "chocolate": ("brown", "the colour of milk chocolate"),
        "tree_trunk": ("brown", "the colour of a tree trunk"),
    },
    "shape": {
        "wheel": ("circle", "shaped like a wheel seen from the side"),
        "full_moon": ("circle", "shaped like the full moon"),
        "chessboard_cell": ("square", "shaped like a single cell of a chessboard"),
        "four_equal_sides": ("square", "with four equal sides and four right angles"),
        "pyramid_side": ("triangle", "shaped like a pyramid seen from the side"),
        "three_sides": ("triangle", "with exactly three sides"),
        "card_suit": ("diamond", "shaped like the playing-card suit that is not black"),
        "kite": ("diamond", "shaped like a classic kite"),
    },
    "count": {
        "eyes": (2, "as many as a person has eyes"),
        "tricycle": (3, "as many as the wheels of a tricycle"),
        "car_wheels": (4, "as many as the wheels of a car"),
        "hand": (5, "as many as the fingers on one hand"),
        "hexagon": (6, "as many as the sides of a hexagon"),
        "insect_legs": (6, "as many as the legs of an insect"),
    },
}


@dataclass
class ShapeSpec:
    shape: str
    colour: str
    size: str
    x: float  # centre, as a fraction of the image width
    y: float  # centre, as a fraction of the image height
    free: tuple[str, ...] = ()  # attributes the prompt leaves open, from ATTRIBUTES
    region: str | None = None  # "sky" / "ground" when the prompt places it there

    def __post_init__(self):
        self.free = tuple(self.free)
        assert self.shape in SHAPES, self.shape
        assert self.colour in OBJECT_COLOURS, self.colour
        assert self.size in SIZES, self.size
        assert 0.0 <= self.x <= 1.0 and 0.0 <= self.y <= 1.0, (self.x, self.y)
        assert set(self.free) <= set(ATTRIBUTES), self.free
        assert self.region in (None, *REGIONS), self.region

    def asserts(self, attribute: str) -> bool:
        return attribute not in self.free


@dataclass
class TextSpec:
    text: str  # 1-3 capital letters
    colour: str
    band: str  # horizontal band of the image it sits in

    def __post_init__(self):
        assert 1 <= len(self.text) <= 3 and self.text.isalpha() and self.text.isupper(), self.text
        assert self.colour in OBJECT_COLOURS, self.colour
        assert self.band in TEXT_BANDS, self.band


@dataclass
class Background:
    colour: str | None = None  # plain background
    scene: str | None = None  # two-tone sky/ground scene

    def __post_init__(self):
        assert (self.colour is None) != (self.scene is None), "exactly one of colour / scene"
        assert self.colour is None or self.colour in PLAIN_BACKGROUNDS, self.colour
        assert self.scene is None or self.scene in TWO_TONE_SCENES, self.scene

    @property
    def sky_and_ground(self) -> tuple[str, str]:
        return TWO_TONE_SCENES[self.scene] if self.scene else (self.colour, self.colour)


@dataclass
class Relation:
    subject: int  # index into Scene.objects
    relation: str
    object: int

    def __post_init__(self):
        assert self.relation in RELATIONS, self.relation
        assert self.subject != self.object


@dataclass
class Scene:
    category: str
    objects: list[ShapeSpec]
    background: Background
    relations: list[Relation] = field(default_factory=list)
    text: TextSpec | None = None
    style: str = "filled"
    forbid: list[dict[str, str]] = field(default_factory=list)  # e.g. {"colour": "red"}: no such object
    implicit: dict[str, str] = field(default_factory=dict)  # attribute -> KNOWLEDGE key the prompt uses
    mentions_background: bool = False
    version: int = SCENE_VERSION

    def __post_init__(self):
        assert self.category in CATEGORIES, self.category
        assert self.style in STYLES, self.style
        assert self.version == SCENE_VERSION, f"scene version {self.version}, this code reads {SCENE_VERSION}"
        for rel in self.relations:
            assert max(rel.subject, rel.object) < len(self.objects)
        for rule in self.forbid:
            assert len(rule) == 1 and next(iter(rule)) in ("colour", "shape"), rule
        for attribute, key in self.implicit.items():
            assert key in KNOWLEDGE[attribute], (attribute, key)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        d = dict(d)
        d["objects"] = [ShapeSpec(**o) for o in d["objects"]]
        d["background"] = Background(**d["background"])
        d["relations"] = [Relation(**r) for r in d.get("relations", [])]
        d["text"] = TextSpec(**d["text"]) if d.get("text") else None
        return cls(**d)

    def groups(self) -> dict[tuple[str | None, str | None], int]:
        """Counts per (colour, shape) kind as the prompt asserts them (None where left open)."""
        counts: dict[tuple[str | None, str | None], int] = {}
        for o in self.objects:
            key = (o.colour if o.asserts("colour") else None, o.shape if o.asserts("shape") else None)
            counts[key] = counts.get(key, 0) + 1
        return counts
