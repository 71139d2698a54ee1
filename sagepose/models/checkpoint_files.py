"""Reading checkpoint files of any supported layout into a dict, never running code from them.

:func:`read_checkpoint` takes ``torch.save`` files (MMPose / MMEngine, ViTPose, Sapiens, Lightning,
sagepose), TorchScript archives (``torch.jit.save``; Sapiens-lite's ``*_torchscript.pt2``), exported
programs (``torch.export.save``; Sapiens-lite's ``*_bfloat16.pt2``) and ``.safetensors`` files (Sapiens2's),
always through ``torch.load(..., weights_only=True)``, by reading the archive's tensor records directly or by
the ``safetensors`` library (tensor data and a JSON header, nothing to run). Classes a file
names beyond plain containers are replaced by inert stand-ins. What the dict's keys mean is
:mod:`sagepose.models.checkpoint`'s business.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path

import torch

from sagepose.errors import SagePoseError


class CheckpointReadError(SagePoseError, RuntimeError):
    """A file that cannot be read as a checkpoint (truncated, corrupt, or an unknown layout)."""


class _Opaque:
    """Stands in for any class or function a checkpoint's *metadata* names (numpy arrays, MMEngine
    objects, TorchScript module classes): it records the arguments and state it is given and runs
    nothing, so a weights-only load never executes code from the file. Tensors are unaffected."""

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.args, obj.state = args, None
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state


def _foreign_global(error: Exception) -> str | None:
    """The global named by torch's weights-only refusal, as the unpickler looks it up."""
    m = re.search(r"GLOBAL (\S+) was not an allowed global", str(error))
    if not m:
        return None
    name = m.group(1)
    return name if "." in name else f"builtins.{name}"  # torch prints builtins without their module


def _weights_only_load(source, mmap: bool = False):
    """``torch.load(source, weights_only=True)``, with every non-tensor global the file names
    replaced by :class:`_Opaque` (metadata stays readable as inert records; weights load as usual)."""
    names: set[str] = set()
    if isinstance(source, (str, os.PathLike)) and hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
        try:
            names.update(torch.serialization.get_unsafe_globals_in_checkpoint(source))
        except (RuntimeError, ValueError, EOFError, pickle.UnpicklingError):  # a legacy (non-zip) file: the loop
            pass
    for _ in range(256):
        if hasattr(source, "seek"):
            source.seek(0)
        try:
            with torch.serialization.safe_globals([(_Opaque, n) for n in sorted(names)]):
                return torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as e:
            name = _foreign_global(e)
            if name is None or name in names:
                raise
            names.add(name)
    raise pickle.UnpicklingError("more than 256 distinct foreign globals")


def _named_tensors(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors reachable from an unpickled TorchScript module tree, named by their attribute paths."""
    out: dict[str, torch.Tensor] = {}
    state = obj.state if isinstance(obj, _Opaque) else obj
    if not isinstance(state, dict):
        return out
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, (_Opaque, dict)):
            out.update(_named_tensors(value, f"{prefix}{name}."))
    return out


def _read_torchscript(path: Path, zf: zipfile.ZipFile, root: str) -> dict[str, torch.Tensor]:
    """A TorchScript archive's parameters and buffers, without compiling or running its code.

    Its ``data.pkl`` + ``data/*`` records are laid out like a ``torch.save`` file; they are
    copied into one (dropping the code and constants) so that ``torch.load(weights_only=True)``
    can read them -- torch refuses TorchScript archives in weights-only mode.
    """
    keep = [n for n in zf.namelist() if n == f"{root}data.pkl" or n.startswith(f"{root}data/")
            or n in (f"{root}version", f"{root}.data/version", f"{root}byteorder")]
    with tempfile.TemporaryDirectory(prefix="sagepose-ts-") as tmp:
        copy = Path(tmp) / "weights.pt"
        with zipfile.ZipFile(copy, "w", zipfile.ZIP_STORED) as out:
            for name in keep:
                with zf.open(name) as src, out.open("archive/" + name[len(root):], "w", force_zip64=True) as dst:
                    while chunk := src.read(1 << 24):
                        dst.write(chunk)
        module = _weights_only_load(str(copy))
    tensors = _named_tensors(module)
    if not tensors:
        raise CheckpointReadError(f"{path}: TorchScript archive holds no tensors")
    return tensors


# torch._export.serde.schema.ScalarType values (the exported-program archive stores dtypes by number)
_EXPORT_DTYPES = {1: torch.uint8, 2: torch.int8, 3: torch.int16, 4: torch.int32, 5: torch.int64, 6: torch.float16,
                  7: torch.float32, 8: torch.float64, 12: torch.bool, 13: torch.bfloat16}


def _read_export_tensor(zf: zipfile.ZipFile, record: str, entry: dict) -> torch.Tensor | None:
    """One tensor of a ``torch.export`` archive: raw bytes described by ``tensor_meta``, or a pickled tensor."""
    data = zf.read(record)
    if entry.get("use_pickle"):
        value = _weights_only_load(io.BytesIO(data))
        return value if isinstance(value, torch.Tensor) else None
    meta = entry.get("tensor_meta")
    if meta is None:
        return None
    dtype = _EXPORT_DTYPES.get(meta["dtype"])
    if dtype is None:
        raise CheckpointReadError(f"{record}: unsupported exported dtype code {meta['dtype']}")
    sizes = [int(s["as_int"]) for s in meta["sizes"]]
    strides = [int(s["as_int"]) for s in meta["strides"]]
    flat = torch.frombuffer(bytearray(data), dtype=dtype) if data else torch.empty(0, dtype=dtype)
    return flat.as_strided(sizes, strides, int(meta["storage_offset"]["as_int"])).clone()


def _read_exported_program(path: Path, zf: zipfile.ZipFile, names: list[str]) -> dict[str, torch.Tensor]:
    """The weights (and tensor constants) of a ``torch.export.save`` archive, without deserialising its graph.

    torch >= 2.6 archives list tensors in ``data/{weights,constants}/*_config.json``; older ones
    hold ``serialized_state_dict.pt`` / ``serialized_constants.pt`` (``torch.save`` blobs).
    """
    out: dict[str, torch.Tensor] = {}
    configs = [n for n in names if re.search(r"data/(weights|constants)/[^/]*_config\.json$", n)]
    for config_name in configs:
        folder = config_name.rsplit("/", 1)[0]
        for fqn, entry in json.loads(zf.read(config_name)).get("config", {}).items():
            if "path_name" in entry:
                tensor = _read_export_tensor(zf, f"{folder}/{entry['path_name']}", entry)
                if tensor is not None:
                    out[fqn] = tensor
    for name in names:
        if name.endswith(("serialized_state_dict.pt", "serialized_constants.pt")):
            blob = _weights_only_load(io.BytesIO(zf.read(name)))
            out.update({k: v for k, v in (blob or {}).items() if isinstance(v, torch.Tensor)})
    if not out:
        raise CheckpointReadError(f"{path}: exported program holds no tensors")
    return out


def _zip_root(names: list[str], marker: str) -> str | None:
    """The archive folder (``'name/'``) holding ``marker`` at its top level, or None."""
    for n in names:
        if n.endswith("/" + marker) and n.count("/") == marker.count("/") + 1:
            return n[: -len(marker)]
    return None


TORCH_SAVE_MAGIC = (b"PK", b"\x80")  # torch.save writes a zip archive (or, before torch 1.6, a pickle)


def is_torch_save_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file torch.save may have written, by its first bytes (nothing is unpickled)."""
    p = Path(path)
    if not p.is_file():
        return False
    with open(p, "rb") as f:
        return f.read(2).startswith(TORCH_SAVE_MAGIC)


def is_safetensors_header(head: bytes) -> bool:
    """Whether a file's first bytes are a ``.safetensors`` header: a little-endian u64 length, then JSON."""
    return len(head) > 8 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < 100_000_000


def _read_safetensors(path: Path) -> dict:
    """A ``.safetensors`` file (Sapiens2's, Hugging Face's) as ``{name: tensor}``: plain tensor data and a JSON
    header, nothing to execute."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointReadError(f"{path}: cannot read this .safetensors file ({_reason(e)}); a truncated or "
                                  "corrupt file: download it again") from e


def _what_it_is(head: bytes) -> str:
    """What a file that is no checkpoint starts with, in words (from its first bytes)."""
    text = head.lstrip()
    if not head:
        return "an empty file"
    if text[:1] == b"<":
        return "it starts with <, an HTML or XML page: a failed download?"
    decoded = text.decode("utf-8", "ignore")  # a character cut at the 256th byte is dropped
    if decoded and len(decoded.encode()) >= len(text) - 3 and all(c.isprintable() or c in "\r\n\t" for c in decoded):
        return f"a text file: {(decoded.splitlines() or [''])[0][:60]!r}"
    return f"it starts with bytes {head[:8].hex(' ')}, neither a zip archive nor a pickle as torch.save writes"


def _reason(error: Exception) -> str:
    """One line of why torch could not read a file. Its weights-only refusal runs to ten lines and advises
    loading with ``weights_only=False``, which would run code from the file: only the cause is kept."""
    text = str(error)
    cause = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    if cause:
        return cause.group(1).strip()
    first = (text.strip().splitlines() or [""])[0]
    return first if "weights_only" not in first else "a pickle a weights-only read refuses"


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Everything a checkpoint file holds that sagepose can use, read without running code from it.

    ``torch.save`` files (any wrapping) come back as saved, metadata included (non-tensor objects
    as inert records); TorchScript archives and ``torch.export`` programs come back as a flat
    ``{name: tensor}`` dict of their parameters and buffers. The layout is recognised from the
    file's content, not its name (Sapiens-lite names both kinds ``.pt2``). A truncated or corrupt
    file raises :class:`CheckpointReadError` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        head = f.read(256)
    if is_safetensors_header(head):
        return _read_safetensors(path)
    if not head.startswith(TORCH_SAVE_MAGIC):
        raise CheckpointReadError(f"{path}: not a checkpoint ({_what_it_is(head)})")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                root = _zip_root(names, "constants.pkl")
                if root is not None and _zip_root(names, "data.pkl") == root:
                    return _read_torchscript(path, zf, root)
                if any(re.search(r"(data/weights/[^/]*_config\.json|serialized_state_dict\.pt)$", n)
                       for n in names):
                    return _read_exported_program(path, zf, names)
            raw = _weights_only_load(str(path), mmap=True)
        else:
            raw = _weights_only_load(str(path))
    except CheckpointReadError:
        raise
    except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, RuntimeError, ValueError, KeyError, IndexError,
            TypeError, OSError) as e:
        raise CheckpointReadError(f"{path}: cannot read this checkpoint ({type(e).__name__}: {_reason(e)}). A "
                                  "truncated or corrupt file (download it again) or a layout sagepose does not "
                                  "know") from e
    if not isinstance(raw, dict):
        raise CheckpointReadError(f"{path}: holds a {type(raw).__name__}, not a state dict")
    return raw
