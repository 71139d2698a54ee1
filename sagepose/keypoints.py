"""Keypoint schemas as data: names, flip pairs, skeleton, OKS sigmas, joint weights.

A schema is one frozen dataclass; adding a custom skeleton means writing one such
object (or one YAML block read by :func:`schema_from_dict`), nothing else. The
numbers for the public datasets are those of MMPose's dataset metainfo files, so
evaluation and loss weighting match published results.

A schema can also come from data (:func:`load_schema`): a COCO keypoint json's category or a YAML
file. OKS sigmas are optional (``sigmas=()``: none, so no OKS AP -- pixel metrics only); flip pairs
missing from a file are inferred from left/right names (:func:`infer_flip_pairs`).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sagepose import keypoint_sets
from sagepose.errors import SagePoseError


class SchemaError(SagePoseError, ValueError):
    """A schema spec that names no built-in schema or readable schema file, or a file whose schema is unusable;
    the message starts with the spec or the file."""


@dataclass(frozen=True)
class KeypointSchema:
    name: str
    keypoints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()  # 0-based index pairs
    sigmas: tuple[float, ...] = ()  # OKS sigmas; () = none (no OKS AP for this schema)
    joint_weights: tuple[float, ...] = ()  # () = all ones
    upper_body: tuple[int, ...] = field(default=())
    # (schema name, another name a released annotation file uses for that keypoint)
    aliases: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self):
        k = len(self.keypoints)
        if not self.joint_weights:
            object.__setattr__(self, "joint_weights", (1.0,) * k)
        for what in ("sigmas", "joint_weights"):
            if what == "sigmas" and not self.sigmas:
                continue
            if len(getattr(self, what)) != k:
                raise ValueError(f"schema {self.name}: {what} has {len(getattr(self, what))} entries, "
                                 f"expected {k}")
        for a, b in (*self.flip_pairs, *self.skeleton):
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(f"schema {self.name}: index pair ({a}, {b}) out of range for {k} keypoints")
        if len(set(self.keypoints)) != k:
            raise ValueError(f"schema {self.name}: duplicate keypoint names")
        for name, _ in self.aliases:
            if name not in self.keypoints:
                raise ValueError(f"schema {self.name}: alias for unknown keypoint {name!r}")

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    @property
    def flip_indices(self) -> list[int]:
        """Permutation that maps each joint to its mirror (identity for centre joints)."""
        idx = list(range(self.num_keypoints))
        for a, b in self.flip_pairs:
            idx[a], idx[b] = b, a
        return idx

    @property
    def lower_body(self) -> tuple[int, ...]:
        upper = set(self.upper_body)
        return tuple(i for i in range(self.num_keypoints) if i not in upper)

    def index(self, name: str) -> int:
        try:
            return self.keypoints.index(name)
        except ValueError:
            raise KeyError(f"schema {self.name} has no keypoint {name!r}") from None

    @property
    def has_sigmas(self) -> bool:
        """Whether the schema has OKS sigmas (then COCO OKS AP can score it)."""
        return bool(self.sigmas)

    def sigmas_array(self) -> np.ndarray:
        if not self.sigmas:
            raise ValueError(f"schema {self.name} has no OKS sigmas: OKS AP and OKS-NMS do not apply to it "
                             "(pixel metrics do); give 'sigmas' in its schema file to enable them")
        return np.asarray(self.sigmas, np.float64)

    def name_mismatches(self, names) -> list[tuple[int, str, str]]:
        """(position, schema name, given name) where a dataset's keypoint names (in order) differ from this schema's.

        Names are compared up to case, spaces, hyphens and underscores ('Head top' is 'head_top'), and an
        alias of the schema's counts as its name; ``names`` has one per keypoint of the schema. A schema
        named only by placeholders (``kp0``, ``kp1``, ...: a bare keypoint count) matches any names.
        """
        if len(names) != self.num_keypoints:
            raise ValueError(f"schema {self.name} has {self.num_keypoints} keypoints, got {len(names)} names")
        if self.keypoints == tuple(f"kp{i}" for i in range(self.num_keypoints)):
            return []
        known = {name: {_plain(name)} for name in self.keypoints}
        for name, alias in self.aliases:
            known[name].add(_plain(alias))
        return [(i, a, str(b)) for i, (a, b) in enumerate(zip(self.keypoints, names)) if _plain(b) not in known[a]]


def _plain(name) -> str:
    return str(name).strip().lower().replace("-", "_").replace(" ", "_")


COCO17 = KeypointSchema(
    name="coco",
    keypoints=("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
               "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
               "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    skeleton=((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
              (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6)),
    sigmas=(0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
            0.107, 0.107, 0.087, 0.087, 0.089, 0.089),
    joint_weights=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5),
    upper_body=tuple(range(11)),
)

MPII16 = KeypointSchema(
    name="mpii",
    keypoints=("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
               "pelvis", "thorax", "upper_neck", "head_top", "right_wrist", "right_elbow",
               "right_shoulder", "left_shoulder", "left_elbow", "left_wrist"),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    skeleton=((0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9), (8, 12),
              (12, 11), (11, 10), (8, 13), (13, 14), (14, 15)),
    sigmas=(0.089, 0.083, 0.107, 0.107, 0.083, 0.089, 0.026, 0.026, 0.026, 0.026, 0.062, 0.072,
            0.179, 0.179, 0.072, 0.062),
    joint_weights=(1.5, 1.2, 1.0, 1.0, 1.2, 1.5, 1.0, 1.0, 1.0, 1.0, 1.5, 1.2, 1.0, 1.0, 1.2, 1.5),
    upper_body=(7, 8, 9, 10, 11, 12, 13, 14, 15),
)

AIC14 = KeypointSchema(
    name="aic",
    keypoints=("right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
               "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
               "left_ankle", "head_top", "neck"),
    flip_pairs=((0, 3), (1, 4), (2, 5), (6, 9), (7, 10), (8, 11)),
    skeleton=((2, 1), (1, 0), (0, 13), (13, 3), (3, 4), (4, 5), (8, 7), (7, 6), (6, 9), (9, 10),
              (10, 11), (12, 13), (0, 6), (3, 9)),
    sigmas=(0.01388152, 0.01515228, 0.01057665, 0.01417709, 0.01497891, 0.01402144, 0.03909642,
            0.03686941, 0.01981803, 0.03843971, 0.03412318, 0.02415081, 0.01291456, 0.01236173),
    joint_weights=(1.0, 1.2, 1.5, 1.0, 1.2, 1.5, 1.0, 1.2, 1.5, 1.0, 1.2, 1.5, 1.0, 1.0),
    upper_body=(0, 1, 2, 3, 4, 5, 12, 13),
)

CROWDPOSE14 = KeypointSchema(
    name="crowdpose",
    keypoints=("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
               "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
               "right_ankle", "top_head", "neck"),
    aliases=(("top_head", "head"),),  # MMPose's name vs the CrowdPose json's
    flip_pairs=((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)),
    skeleton=((10, 8), (8, 6), (11, 9), (9, 7), (6, 7), (0, 6), (1, 7), (0, 1), (0, 2), (1, 3),
              (2, 4), (3, 5), (12, 13), (1, 13), (0, 13)),
    sigmas=(0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
            0.079, 0.079),
    # MMPose's crowdpose metainfo weights, kept verbatim for parity.
    joint_weights=(0.2, 0.2, 0.2, 1.3, 1.5, 0.2, 1.3, 1.5, 0.2, 0.2, 0.5, 0.2, 0.2, 0.5),
    upper_body=(0, 1, 2, 3, 4, 5, 12, 13),
)

COCO_WHOLEBODY133 = KeypointSchema(**keypoint_sets.COCO_WHOLEBODY133)  # sagepose/keypoint_sets.py: the tables
GOLIATH308 = KeypointSchema(**keypoint_sets.GOLIATH308)
GOLIATH_TO_COCO17 = keypoint_sets.GOLIATH_TO_COCO17

# PoseTrack18: COCO-17 with the eyes replaced by head_bottom / head_top; names, swaps, skeleton links, weights and
# sigmas from MMPose 1.3.2's configs/_base_/datasets/posetrack18.py
POSETRACK18 = KeypointSchema(
    name="posetrack18",
    keypoints=("nose", "head_bottom", "head_top", "left_ear", "right_ear", "left_shoulder",
               "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
               "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"),
    flip_pairs=((3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    skeleton=((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
              (6, 8), (7, 9), (8, 10), (0, 1), (0, 2), (1, 5), (1, 6)),
    sigmas=(0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
            0.107, 0.107, 0.087, 0.087, 0.089, 0.089),
    joint_weights=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5),
    upper_body=tuple(range(11)),
)


SCHEMAS: dict[str, KeypointSchema] = {s.name: s for s in (COCO17, MPII16, AIC14, CROWDPOSE14, POSETRACK18,
                                                            COCO_WHOLEBODY133, GOLIATH308)}


def generic_schema(num_keypoints: int) -> KeypointSchema:
    """A schema with no left/right pairs, for a bare keypoint count (flip test then only mirrors)."""
    k = num_keypoints
    return KeypointSchema(name=f"generic-{k}", keypoints=tuple(f"kp{i}" for i in range(k)), flip_pairs=(),
                          skeleton=(), sigmas=(0.05,) * k, joint_weights=(1.0,) * k)


SCHEMA_KEYS = ("name", "keypoints", "flip_pairs", "skeleton", "sigmas", "joint_weights", "upper_body", "aliases")


def schema_from_dict(d: dict, where: str = "schema", infer_flips: bool = False) -> KeypointSchema:
    """Build a custom schema from a plain dict (e.g. a YAML block): ``name``, ``keypoints`` (names), and optionally
    ``flip_pairs`` / ``skeleton`` (pairs of 0-based indices or of names), ``sigmas`` (OKS; absent: none),
    ``joint_weights`` (absent: ones), ``upper_body`` (indices or names), ``aliases``.

    ``infer_flips``: without a ``flip_pairs`` entry, pair left/right names (:func:`infer_flip_pairs`); otherwise
    a schema without one has none. Errors are :class:`SchemaError` s starting with ``where``.
    """
    if not isinstance(d, dict):
        raise SchemaError(f"{where}: expected a mapping with 'name' and 'keypoints', got {type(d).__name__}")
    unknown = sorted(set(d) - set(SCHEMA_KEYS))
    if unknown:
        raise SchemaError(f"{where}: unknown schema keys {unknown}; known: {list(SCHEMA_KEYS)}")
    for key in ("name", "keypoints"):
        if key not in d:
            raise SchemaError(f"{where}: missing {key!r}")
    names = d["keypoints"]
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) and n for n in names):
        raise SchemaError(f"{where}: 'keypoints' must be a non-empty list of names, got {names!r}")
    names = tuple(names)

    def index(value, key: str) -> int:
        if isinstance(value, str):
            if value not in names:
                raise SchemaError(f"{where}: {key} names {value!r}, which is not one of its keypoints")
            return names.index(value)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value)
        raise SchemaError(f"{where}: {key} entries are keypoint names or 0-based indices, got {value!r}")

    def pairs(key: str) -> tuple[tuple[int, int], ...]:
        out = []
        for p in d.get(key) or ():
            if not isinstance(p, (list, tuple)) or len(p) != 2:
                raise SchemaError(f"{where}: {key} entries are pairs, got {p!r}")
            out.append((index(p[0], key), index(p[1], key)))
        return tuple(out)

    flip_pairs = pairs("flip_pairs") if "flip_pairs" in d or not infer_flips else infer_flip_pairs(names)
    try:
        return KeypointSchema(
            name=str(d["name"]), keypoints=names, flip_pairs=flip_pairs, skeleton=pairs("skeleton"),
            sigmas=tuple(float(v) for v in d.get("sigmas") or ()),
            joint_weights=tuple(float(v) for v in d.get("joint_weights") or ()),
            upper_body=tuple(index(v, "upper_body") for v in d.get("upper_body") or ()),
            aliases=tuple(tuple(p) for p in d.get("aliases") or ()))
    except (TypeError, ValueError) as e:
        raise SchemaError(f"{where}: {e}") from None


def schema_to_dict(schema: KeypointSchema) -> dict:
    """A schema as plain data (lists, numbers, strings): what a checkpoint stores; :func:`schema_from_dict` reads
    it back to an equal schema."""
    def plain(x):
        return [plain(v) for v in x] if isinstance(x, (list, tuple)) else x
    return {k: plain(v) for k, v in asdict(schema).items()}


# ---- left/right names -------------------------------------------------------------------------------------
# Tokens of a name: a capital run not followed by a lowercase letter ("LH" in paw1LH, "L" in earL), a word
# with an optional capital ("Ear", "paw"), a digit run. Separators (_ - . space) split tokens.
_TOKEN = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_SIDE_WORD = re.compile(r"left|right", re.IGNORECASE)
_SWAP = {"l": "r", "r": "l", "L": "R", "R": "L"}


def _mirror_candidates(name: str) -> set[str]:
    """Names (lower case) ``name`` would have on the other side: each ``left`` / ``right`` swapped (any case,
    anywhere: ``leftear``, ``ear_left``), each one-letter token ``l`` / ``r`` (``l_paw``, ``earL``), and each
    ``L`` / ``R`` inside a capital run (``paw1LH`` -> ``paw1RH``), one swap at a time."""
    out = set()
    for m in _SIDE_WORD.finditer(name):
        other = "right" if m.group().lower() == "left" else "left"
        out.add((name[:m.start()] + other + name[m.end():]).lower())
    for m in _TOKEN.finditer(name):
        tok = m.group()
        if tok.lower() in ("l", "r") or tok.isupper():
            for j, ch in enumerate(tok):
                if ch in _SWAP:
                    pos = m.start() + j
                    out.add((name[:pos] + _SWAP[ch] + name[pos + 1:]).lower())
    out.discard(name.lower())
    return out


def infer_flip_pairs(names) -> tuple[tuple[int, int], ...]:
    """Left/right pairs of keypoint ``names`` -> 0-based index pairs ``(i, j)``, ``i < j``, sorted.

    A name's mirror is the other name obtained by one side swap (see :func:`_mirror_candidates`:
    ``left_ear``/``right_ear``, ``leftear``/``rightear``, ``ear_left``, ``l_paw``/``r_paw``, ``earL``/``earR``,
    ``paw1LH``/``paw1RH``), compared case-insensitively. When no name matches exactly, names are compared with
    their digits removed (mirror-mouse's ``paw1LH_top`` / ``paw4RH_top`` number the paws 1-4 around the body).
    Two names pair only when each is the other's one match: a name with several candidates (ambiguous) or none
    stays unpaired, as do centre joints.
    """
    names = [str(n) for n in names]
    lower = [n.lower() for n in names]
    undigit = [re.sub(r"\d+", "", n) for n in lower]

    def partner(i: int) -> int | None:
        cands = _mirror_candidates(names[i])
        exact = [j for j in range(len(names)) if j != i and lower[j] in cands]
        if exact:
            return exact[0] if len(exact) == 1 else None
        loose = {re.sub(r"\d+", "", c) for c in cands}
        near = [j for j in range(len(names)) if j != i and undigit[j] in loose]
        return near[0] if len(near) == 1 else None

    found = [partner(i) for i in range(len(names))]
    return tuple((i, j) for i, j in enumerate(found) if j is not None and i < j and found[j] == i)


def parse_name_pairs(text: str, names, sep: str, what: str = "pairs") -> tuple[tuple[int, int], ...]:
    """``"a:b,c:d"`` (``sep`` ``":"``; skeletons ``"a-b,b-c"`` with ``"-"``) over keypoint ``names`` -> 0-based
    index pairs. A name may itself contain ``sep``: the item is split where both sides are names. Unknown or
    ambiguous items are a ValueError naming the item."""
    names = list(names)
    out = []
    for item in (t.strip() for t in str(text).split(",")):
        if not item:
            continue
        splits = [(item[:m.start()].strip(), item[m.end():].strip()) for m in re.finditer(re.escape(sep), item)]
        ok = [(a, b) for a, b in splits if a in names and b in names]
        if len(ok) != 1:
            why = "ambiguous" if ok else f"expected NAME{sep}NAME with both among the keypoints {names}"
            raise ValueError(f"{what} {item!r}: {why}")
        out.append((names.index(ok[0][0]), names.index(ok[0][1])))
    return tuple(out)


# ---- schemas from files -----------------------------------------------------------------------------------
def load_schema(spec) -> KeypointSchema:
    """A schema from a built-in name (:data:`SCHEMAS`), a COCO keypoint json, a YAML schema file, a dict
    (:func:`schema_from_dict`) or a schema (returned as is).

    * COCO json (``.json``): its category with ``keypoints`` (one, or several with the same names); name: the
      category's; ``skeleton`` is 1-based in COCO's official files and 0-based in others: it is read as 1-based
      when an index equals K or none is 0 (a 0-based skeleton that never uses keypoint 0 reads as 1-based:
      write such a one 1-based, as sagepose's DLC import does); ``flip_pairs`` (pairs of names or 0-based
      indices) when the category has them, else inferred from the names (:func:`infer_flip_pairs`);
      ``sigmas`` / ``joint_weights`` when it has them (no sigmas: pixel metrics only). The whole file is read.
    * YAML (``.yaml`` / ``.yml``): what :func:`schema_from_dict` reads, at the top level or under a top-level
      ``schema:`` key; ``name`` defaults to the file's stem, absent ``flip_pairs`` are inferred from the names.

    Errors (:class:`SchemaError`) name the spec or the file.
    """
    if isinstance(spec, KeypointSchema):
        return spec
    if isinstance(spec, dict):
        return schema_from_dict(spec)
    if not isinstance(spec, (str, os.PathLike)):
        raise SchemaError(f"schema {spec!r}: expected a built-in name, a path or a mapping")
    key = os.fspath(spec)
    if key in SCHEMAS:
        return SCHEMAS[key]
    path = Path(key)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise SchemaError(f"schema {key!r}: not a built-in schema ({', '.join(sorted(SCHEMAS))}) nor a "
                          ".json / .yaml schema file")
    if not path.is_file():
        raise SchemaError(f"{key}: schema file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SchemaError(f"{key}: cannot read the schema file ({e})") from None
    if suffix == ".json":
        return _schema_from_coco(key, text)
    return _schema_from_yaml(key, text)


def _schema_from_yaml(path: str, text: str) -> KeypointSchema:
    import yaml  # deferred: only YAML schema files need it

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SchemaError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    if isinstance(data, dict) and isinstance(data.get("schema"), dict):
        data = data["schema"]
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: expected a schema mapping (name, keypoints, ...), or one under 'schema:'")
    return schema_from_dict({"name": Path(path).stem, **data}, where=path, infer_flips=True)


def _schema_from_coco(path: str, text: str) -> KeypointSchema:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SchemaError(f"{path}: not valid JSON: {e}") from None
    cats = [c for c in (data.get("categories") or []) if isinstance(c, dict) and c.get("keypoints")] \
        if isinstance(data, dict) else []
    if not cats:
        raise SchemaError(f"{path}: no category with 'keypoints' names: not a COCO keypoint json")
    cat = cats[0]
    if any(list(c["keypoints"]) != list(cat["keypoints"]) for c in cats[1:]):
        raise SchemaError(f"{path}: {len(cats)} categories with different keypoint names; one schema needs one list")
    names, k = list(cat["keypoints"]), len(cat["keypoints"])
    skeleton = cat.get("skeleton") or []
    where = f"{path}: category {cat.get('id', '?')}"
    if not all(isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, int) for v in p) for p in skeleton):
        raise SchemaError(f"{where}: 'skeleton' must be pairs of keypoint indices")
    flat = [v for p in skeleton for v in p]
    if flat and (k in flat or 0 not in flat):  # COCO's official files number keypoints from 1
        skeleton = [[a - 1, b - 1] for a, b in skeleton]
    d = {"name": str(cat.get("name") or Path(path).stem), "keypoints": names, "skeleton": skeleton}
    for key in ("flip_pairs", "sigmas", "joint_weights", "upper_body"):
        if key in cat:
            d[key] = cat[key]
    return schema_from_dict(d, where=where, infer_flips=True)
