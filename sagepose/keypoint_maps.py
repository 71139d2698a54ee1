"""Keypoints of one schema in another's terms, and the union of several schemas: tables in, index arrays out.

* :class:`KeypointMap` -- each joint of a target schema from a source schema's joints: a copy of one, the midpoint
  of two (MMPose's ``KeypointConverter`` allows both), or nothing (the joint is unlabeled in the target). Built by
  :func:`keypoint_map` from the equivalence table; applied to arrays of any leading shape.
* :class:`UnionSchema` -- one output schema for several datasets (:func:`union_schema`): **merged** (a joint two
  datasets share is one output; the others get their own) or **concatenated** (every dataset's joints side by
  side). Each member's joints have union indices; a sample of a member labels only those (its mask).

Which joints correspond is data, not code: ``sagepose.keypoint_sets.JOINT_EQUIVALENCES`` rows (``{schema name:
keypoint name}``) for the built-in body datasets. Schemas the table does not know (a custom rig) correspond by
identical keypoint names, with each other only. A caller may pass its own rows (``equivalences=``).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from sagepose import keypoint_sets
from sagepose.errors import SagePoseError
from sagepose.keypoints import KeypointSchema, load_schema


class MappingError(SagePoseError, ValueError):
    """A mapping or union that cannot be built (no joint in common, an unknown joint in a table row)."""


def _join_key(schema: KeypointSchema, joint: str, table: dict, known: set[str]):
    """What a joint is, for matching across schemas: its equivalence row, or (unknown schemas) its name."""
    row = table.get((schema.name, joint))
    if row is not None:
        return ("row", row)
    if schema.name in known:
        return ("own", schema.name, joint)  # a listed dataset's joint outside every row matches nothing
    return ("name", joint)


def _table(equivalences: Iterable[dict] | None) -> tuple[dict, set[str]]:
    rows = keypoint_sets.JOINT_EQUIVALENCES if equivalences is None else tuple(equivalences)
    table, known = {}, set()
    for i, row in enumerate(rows):
        for schema_name, joint in row.items():
            table[(schema_name, joint)] = i
            known.add(schema_name)
    return table, known


@dataclass(frozen=True)
class KeypointMap:
    """``target`` joint ``t`` comes from ``source`` joints ``sources[t]``: ``()`` none, ``(i,)`` a copy, ``(i, j)``
    their midpoint (labeled only where both are)."""

    source: KeypointSchema
    target: KeypointSchema
    sources: tuple[tuple[int, ...], ...]

    @property
    def covered(self) -> np.ndarray:
        """(K_target,) bool: the target joints this map gives."""
        return np.array([bool(s) for s in self.sources])

    def ends(self) -> tuple[np.ndarray, np.ndarray]:
        """(K_target,) int64 twice: each target joint's first and last source joint (the same one for a copy; 0 for a
        joint the map does not give)."""
        first = np.array([s[0] if s else 0 for s in self.sources], np.int64)
        second = np.array([s[-1] if s else 0 for s in self.sources], np.int64)
        return first, second

    def apply(self, keypoints, visible) -> tuple[np.ndarray, np.ndarray]:
        """(..., K_source, 2) coordinates and (..., K_source) visibility (or scores) -> the target's. A midpoint's
        visibility is the smaller of its two; a joint the map does not give is at 0 with visibility 0."""
        kp, vis = np.asarray(keypoints, np.float64), np.asarray(visible, np.float64)
        first, second = self.ends()
        out = 0.5 * (kp[..., first, :] + kp[..., second, :])
        out_vis = np.minimum(vis[..., first], vis[..., second])
        covered = self.covered
        out[..., ~covered, :] = 0.0
        out_vis[..., ~covered] = 0.0
        return out, out_vis

    def apply_torch(self, keypoints, visible):
        """:meth:`apply` for torch tensors (same rules, on their device and dtype)."""
        import torch

        first, second = (torch.as_tensor(a, device=keypoints.device) for a in self.ends())
        covered = torch.as_tensor(self.covered, device=keypoints.device)
        out = 0.5 * (keypoints[..., first, :] + keypoints[..., second, :])
        out_vis = torch.minimum(visible[..., first], visible[..., second])
        return out * covered[:, None].to(out.dtype), out_vis * covered.to(out_vis.dtype)


def keypoint_map(source, target, midpoints: bool = False, equivalences: Iterable[dict] | None = None) -> KeypointMap:
    """The map from ``source`` to ``target`` (schemas or built-in names): every target joint that a source joint
    corresponds to is copied; with ``midpoints``, target joints of ``keypoint_sets.MIDPOINT_JOINTS`` whose two ends
    the source has become their midpoint. At least one joint must be given."""
    source, target = load_schema(source), load_schema(target)
    table, known = _table(equivalences)
    by_key = {_join_key(source, j, table, known): i for i, j in enumerate(source.keypoints)}
    direct = [by_key.get(_join_key(target, j, table, known)) for j in target.keypoints]
    sources = []
    for t, joint in enumerate(target.keypoints):
        if direct[t] is not None:
            sources.append((direct[t],))
            continue
        ends = keypoint_sets.MIDPOINT_JOINTS.get((target.name, joint)) if midpoints else None
        if ends is not None:
            a, b = (direct[target.index(e)] for e in ends)
            if a is not None and b is not None:
                sources.append((a, b))
                continue
        sources.append(())
    if not any(sources):
        raise MappingError(f"no keypoint of schema {source.name} corresponds to one of schema {target.name}")
    return KeypointMap(source, target, tuple(sources))


UNION_MODES = ("merged", "concatenated")


@dataclass(frozen=True)
class UnionSchema:
    """``schema``: the union's outputs; ``names``: the members (datasets) in order; ``members``: their schemas;
    ``indices[m]``: the union index of each of member ``m``'s joints."""

    schema: KeypointSchema
    names: tuple[str, ...]
    members: tuple[KeypointSchema, ...]
    indices: tuple[tuple[int, ...], ...]
    mode: str

    def member(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"union {self.schema.name} has no member {name!r}; members: {list(self.names)}") from None

    def labeled(self, member: int) -> np.ndarray:
        """(K_union,) bool: the union joints member ``member`` labels (its samples' loss mask)."""
        mask = np.zeros(self.schema.num_keypoints, bool)
        mask[list(self.indices[member])] = True
        return mask

    def to_union(self, member: int, keypoints, visible) -> tuple[np.ndarray, np.ndarray]:
        """(..., K_m, 2), (..., K_m) of member ``member`` -> (..., K_union, 2), (..., K_union); others 0."""
        kp, vis = np.asarray(keypoints, np.float64), np.asarray(visible, np.float64)
        idx = list(self.indices[member])
        out = np.zeros((*kp.shape[:-2], self.schema.num_keypoints, 2))
        out_vis = np.zeros((*vis.shape[:-1], self.schema.num_keypoints))
        out[..., idx, :], out_vis[..., idx] = kp, vis
        return out, out_vis

    def from_union(self, member: int, array, axis: int = -1):
        """Member ``member``'s joints of a union-sized array (numpy or torch), along ``axis``."""
        idx = list(self.indices[member])
        if isinstance(array, np.ndarray):
            return np.take(array, idx, axis=axis)
        import torch

        return torch.index_select(array, axis, torch.as_tensor(idx, device=array.device))


def union_schema(members: Sequence, mode: str = "merged", names: Sequence[str] | None = None,
                 equivalences: Iterable[dict] | None = None) -> UnionSchema:
    """The union of ``members`` (schemas or built-in names; ``names``: the datasets', default the schemas').

    ``merged``: members' joints that correspond (the equivalence rows; same names for schemas outside the table) are
    one output, named as the first member names it; a joint of its own keeps its name, prefixed ``{member}_`` where
    an earlier joint holds it (AIC's ``head_top`` beside MPII's -> ``aic_head_top``). ``concatenated``: every joint
    its own output, ``{member}_{joint}``. Flip pairs, skeleton links, joint weights, OKS sigmas (where every member
    has them) and the upper body follow from the members'.
    """
    if mode not in UNION_MODES:
        raise MappingError(f"unknown union mode {mode!r}; choose from {list(UNION_MODES)}")
    schemas = tuple(load_schema(m) for m in members)
    names = tuple(names) if names is not None else tuple(s.name for s in schemas)
    if not schemas or len(names) != len(schemas) or len(set(names)) != len(names):
        raise MappingError(f"a union needs one or more members with distinct names, got {list(names)}")
    table, known = _table(equivalences)
    joints: list[str] = []
    weights: list[float] = []
    sigmas: list[float] = []
    upper: list[int] = []
    seen: dict = {}
    indices = []
    for name, s in zip(names, schemas):
        idx = []
        for i, joint in enumerate(s.keypoints):
            key = _join_key(s, joint, table, known) if mode == "merged" else ("all", name, joint)
            if key not in seen:
                label = joint if mode == "merged" and joint not in joints else f"{name}_{joint}"
                if label in joints:
                    raise MappingError(f"union of {list(names)}: two outputs would be named {label!r}")
                seen[key] = len(joints)
                joints.append(label)
                weights.append(s.joint_weights[i])
                sigmas.append(s.sigmas[i] if s.has_sigmas else float("nan"))
                if i in s.upper_body:
                    upper.append(seen[key])
            idx.append(seen[key])
        if len(set(idx)) != len(idx):
            raise MappingError(f"union: two keypoints of {name} ({s.name}) map to one output")
        indices.append(tuple(idx))

    def links(attr: str) -> tuple[tuple[int, int], ...]:
        out: list[tuple[int, int]] = []
        for s, idx in zip(schemas, indices):
            for a, b in getattr(s, attr):
                pair = (idx[a], idx[b])
                if pair not in out and pair[::-1] not in out:
                    out.append(pair)
        return tuple(out)

    has_sigmas = all(s.has_sigmas for s in schemas)
    union = KeypointSchema(
        name="+".join(names), keypoints=tuple(joints), flip_pairs=links("flip_pairs"), skeleton=links("skeleton"),
        sigmas=tuple(sigmas) if has_sigmas else (), joint_weights=tuple(weights), upper_body=tuple(upper))
    return UnionSchema(union, names, schemas, tuple(indices), mode)
