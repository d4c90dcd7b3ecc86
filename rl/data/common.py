"""What every data source shares: records, errors that name file/record/field, counted skips,
safe reading of files from strangers, and polygon rasterization.

Loading files from the internet runs no code: pickles go through `load_pickle_restricted`
(plain containers and scalars only), and paths read from annotations go through `safe_join`
(they cannot leave the dataset root).
"""

from __future__ import annotations

import io
import pickle
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils


class DataError(ValueError):
    """Bad input data; the message names the file, the record and the field (also kept as
    `.field`, which counted skips use as their reason)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field

    @property
    def reason(self) -> str:
        return f"bad {self.field}" if self.field else "bad file"


class UnsafePickleError(DataError):
    """A pickle asked for something other than plain containers and scalars."""


def data_error(path, record, field_name: str, message: str) -> DataError:
    where = f"{path}" + (f": record {record}" if record is not None else "")
    return DataError(f"{where}: field {field_name!r}: {message}", field_name.split("[")[0])


@dataclass
class Record:
    """One referring sample in the ground-truth contract.

    image: an (H, W, 3) uint8 array or a path to the image file. solution: the contract dict
    (`rewards.solution`), in the image's pixel frame. kind: the expression kind where known.
    """

    id: str
    source: str
    image: object
    expression: str
    solution: dict
    kind: str = ""
    extra: dict = field(default_factory=dict)


class Skips:
    """Records left out, counted by reason. Strict mode raises instead of counting."""

    def __init__(self, strict: bool = True):
        self.strict = strict
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def skip(self, reason: str, error: Exception | str) -> None:
        if self.strict:
            if isinstance(error, Exception):
                raise error
            raise DataError(str(error))
        self.counts[reason] += 1
        self.examples.setdefault(reason, str(error))

    def __bool__(self) -> bool:
        return bool(self.counts)


# ---- files from strangers -----------------------------------------------------------------------
_PLAIN = (dict, list, tuple, str, int, float, bool, type(None))


class _RestrictedUnpickler(pickle.Unpickler):  # noqa: S301 - refuses every global below
    def __init__(self, file, path):
        super().__init__(file, encoding="utf-8")
        self.path = path

    def find_class(self, module, name):
        raise UnsafePickleError(
            f"{self.path}: refused to load global {module}.{name}: only plain containers and "
            "scalars (dict, list, tuple, str, int, float, bool, None) are accepted")


def load_pickle_restricted(path: str | Path):
    """Read a pickle of plain data (the RefCOCO-family `refs(*).p`) without running its code.

    Any global (a class, a function such as `os.system`, a `__reduce__` payload) is refused
    with UnsafePickleError naming the file and the global.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), path).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: not a readable pickle of plain data ({e})") from None
    _check_plain(obj, path)
    return obj


def _check_plain(obj, path, depth: int = 0):
    if depth > 64:
        raise DataError(f"{path}: nested deeper than 64 levels")
    if not isinstance(obj, _PLAIN):
        raise UnsafePickleError(f"{path}: refused object of type {type(obj).__name__}")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, path, depth + 1)
            _check_plain(v, path, depth + 1)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _check_plain(v, path, depth + 1)


def safe_join(root: str | Path, name: str, *, source, record, field_name: str) -> Path:
    """`root / name`, refused when `name` (from a dataset file) leaves `root`."""
    if not isinstance(name, str) or not name:
        raise data_error(source, record, field_name, f"expected a file name, got {name!r}")
    root_resolved = Path(root).resolve()
    path = (root_resolved / name).resolve()
    if Path(name).is_absolute() or not path.is_relative_to(root_resolved):
        raise data_error(source, record, field_name,
                         f"path {name!r} leaves the dataset root {root_resolved}")
    return path


def read_image(path: Path, *, source, record, field_name: str) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array; a missing or corrupt file is a DataError."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise data_error(source, record, field_name, f"image file {path} does not exist")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise data_error(source, record, field_name, f"cannot read image {path} ({e})") from None


# ---- geometry -----------------------------------------------------------------------------------
def check_vertices(xs, ys, width: int, height: int, *, source, record, field_name: str,
                   tolerance: float = 1.0) -> None:
    """A DataError naming file, record and field when a vertex lies more than `tolerance` px
    outside the image."""
    if (xs.min() < -tolerance or ys.min() < -tolerance or xs.max() > width + tolerance
            or ys.max() > height + tolerance):
        raise data_error(source, record, field_name,
                         f"polygon reaches ({xs.min():.1f}, {ys.min():.1f})–({xs.max():.1f}, "
                         f"{ys.max():.1f}), outside the {width}x{height} image")


def polygons_to_mask(polygons, width: int, height: int, *, source, record, field_name: str,
                     tolerance: float = 1.0) -> np.ndarray:
    """Rasterize COCO-style polygons ([x1, y1, x2, y2, ...] lists, pixel frame) with
    pycocotools on their raw vertices, as COCO and REFER do (pycocotools clips what falls
    outside). Points more than `tolerance` px outside the image are an error."""
    flat = []
    for k, poly in enumerate(polygons):
        pts = np.asarray(poly, dtype=np.float64).reshape(-1)
        if pts.size < 6 or pts.size % 2:
            raise data_error(source, record, f"{field_name}[{k}]",
                             f"a polygon needs at least 3 (x, y) points, got {pts.size} numbers")
        check_vertices(pts[0::2], pts[1::2], width, height, source=source, record=record,
                       field_name=f"{field_name}[{k}]", tolerance=tolerance)
        flat.append(pts.tolist())
    rles = mask_utils.frPyObjects(flat, height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def segmentation_to_mask(seg, width: int, height: int, *, source, record,
                         field_name: str) -> np.ndarray:
    """A COCO annotation's `segmentation` (polygons, or RLE) as an (H, W) bool mask."""
    if isinstance(seg, list):
        return polygons_to_mask(seg, width, height, source=source, record=record,
                                field_name=field_name)
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if list(seg["size"]) != [height, width]:
            raise data_error(source, record, f"{field_name}.size",
                             f"expected [{height}, {width}], got {seg['size']}")
        rle = seg if not isinstance(seg["counts"], list) else \
            mask_utils.frPyObjects(seg, height, width)
        if isinstance(rle["counts"], str):
            rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        return mask_utils.decode(rle).astype(bool)
    raise data_error(source, record, field_name, "expected polygons or a COCO RLE")
