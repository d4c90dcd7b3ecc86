"""The spatial vocabulary: grid tokens, offset tokens and `<DELETE>` (method spec §1).

All geometry is in normalized image coordinates `(x, y) ∈ [0, 1]²`, x to the right, y down.
`<grid_i_j>` is the cell in column `i` (x) and row `j` (y) of a G×G lattice and stands for the
cell centre `((i + 0.5)/G, (j + 0.5)/G)`. `<off_dx_dy>` moves a point by `(dx, dy)·s` with
`dx, dy ∈ {-K..K}` and step `s = offset_step_cells / G` (half a cell by default).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

DELETE_TOKEN = "<DELETE>"
# The exact spelling of the vocabulary's tokens, shared by every parser: ASCII digits only
# (Python's `\d` also matches e.g. Arabic-Indic digits, which `int` accepts), no leading zeros
# and no `-0` (`<grid_03_1>` and `<off_-0_1>` are no token of the vocabulary: a model could
# only spell them through byte pieces). Indices are checked against the grid and radius after
# matching (`cell_in_range`, `offset_in_range`).
_INDEX = r"(0|[1-9][0-9]{0,5})"
_SIGNED = r"(0|-?[1-9][0-9]{0,5})"
GRID_TOKEN_RE = re.compile(rf"<grid_{_INDEX}_{_INDEX}>")
# The same spelling without groups, to build larger patterns from.
GRID_TOKEN_PATTERN = GRID_TOKEN_RE.pattern.replace("(", "(?:")
OFFSET_TOKEN_RE = re.compile(rf"<off_{_SIGNED}_{_SIGNED}>")
# Any token of the vocabulary's spelling (ranges are the vocabulary's to check).
SPATIAL_TOKEN_RE = re.compile("|".join([GRID_TOKEN_PATTERN,
                                        OFFSET_TOKEN_RE.pattern.replace("(", "(?:"),
                                        re.escape(DELETE_TOKEN)]))
VOCAB_FILE = "spatial_vocab.json"


@dataclass(frozen=True)
class SpatialVocab:
    """Parameters of the spatial vocabulary; every conversion between geometry and tokens.

    Args:
        grid_size: G, cells per side of the lattice (default 32: 1024 grid tokens).
        offset_radius: K, offsets take values in {-K..K} on each axis ((2K+1)² tokens).
        offset_step_cells: s·G, the offset step as a fraction of a cell (default 0.5, so grid 32
            with offsets resolves like a 64 grid).
    """

    grid_size: int = 32
    offset_radius: int = 1
    offset_step_cells: float = 0.5

    def __post_init__(self):
        if not isinstance(self.grid_size, int) or self.grid_size < 1:
            raise ValueError(f"grid_size must be a positive int, got {self.grid_size!r}")
        if not isinstance(self.offset_radius, int) or self.offset_radius < 0:
            raise ValueError(f"offset_radius must be an int >= 0, got {self.offset_radius!r}")
        if not self.offset_step_cells > 0:
            raise ValueError(f"offset_step_cells must be > 0, got {self.offset_step_cells!r}")

    # ---- token strings -------------------------------------------------------------------
    @property
    def offset_step(self) -> float:
        """s, the offset step in normalized units."""
        return self.offset_step_cells / self.grid_size

    @staticmethod
    def grid_token(i: int, j: int) -> str:
        return f"<grid_{i}_{j}>"

    @staticmethod
    def offset_token(dx: int, dy: int) -> str:
        return f"<off_{dx}_{dy}>"

    def grid_tokens(self) -> list[str]:
        """All G² grid tokens, column-major (i outer, j inner): a stable order for token ids."""
        g = self.grid_size
        return [self.grid_token(i, j) for i in range(g) for j in range(g)]

    def offsets(self) -> list[tuple[int, int]]:
        """All (dx, dy) with |dx|, |dy| <= K, dx outer."""
        k = self.offset_radius
        return [(dx, dy) for dx in range(-k, k + 1) for dy in range(-k, k + 1)]

    def offset_tokens(self) -> list[str]:
        return [self.offset_token(dx, dy) for dx, dy in self.offsets()]

    def all_tokens(self) -> list[str]:
        """The tokens added to a tokenizer, in id order: grid, offsets, `<DELETE>`."""
        return self.grid_tokens() + self.offset_tokens() + [DELETE_TOKEN]

    @property
    def num_tokens(self) -> int:
        return self.grid_size**2 + (2 * self.offset_radius + 1) ** 2 + 1

    # ---- parsing single tokens (None when not a valid token of this vocabulary) ----------
    def parse_grid_token(self, token: str) -> tuple[int, int] | None:
        m = GRID_TOKEN_RE.fullmatch(token)
        if not m:
            return None
        i, j = int(m.group(1)), int(m.group(2))
        return (i, j) if self.cell_in_range(i, j) else None

    def parse_offset_token(self, token: str) -> tuple[int, int] | None:
        m = OFFSET_TOKEN_RE.fullmatch(token)
        if not m:
            return None
        dx, dy = int(m.group(1)), int(m.group(2))
        return (dx, dy) if self.offset_in_range(dx, dy) else None

    def cell_in_range(self, i: int, j: int) -> bool:
        return 0 <= i < self.grid_size and 0 <= j < self.grid_size

    def offset_in_range(self, dx: int, dy: int) -> bool:
        k = self.offset_radius
        return -k <= dx <= k and -k <= dy <= k

    def tokens_in(self, text: str) -> list[str]:
        """The tokens of this vocabulary that `text` spells, in order (the exact grammar, in
        range); anything else is skipped."""
        return [t for t in SPATIAL_TOKEN_RE.findall(text)
                if t == DELETE_TOKEN or self.parse_grid_token(t) is not None
                or self.parse_offset_token(t) is not None]

    # ---- geometry ------------------------------------------------------------------------
    def point_to_cell(self, x: float, y: float) -> tuple[int, int]:
        """The cell containing normalized point (x, y); points on or past the border clip."""
        g = self.grid_size
        return (min(g - 1, max(0, math.floor(x * g))), min(g - 1, max(0, math.floor(y * g))))

    def cell_center(self, i: int, j: int) -> tuple[float, float]:
        """Normalized centre of cell (i, j)."""
        g = self.grid_size
        return ((i + 0.5) / g, (j + 0.5) / g)

    def point_to_token(self, x: float, y: float) -> str:
        return self.grid_token(*self.point_to_cell(x, y))

    def token_to_point(self, token: str) -> tuple[float, float]:
        cell = self.parse_grid_token(token)
        if cell is None:
            raise ValueError(f"{token!r} is not a grid token of a {self.grid_size}-grid")
        return self.cell_center(*cell)

    def apply_offset(self, x: float, y: float, dx: int, dy: int) -> tuple[float, float]:
        """p' = clip(p + (dx, dy)·s, 0, 1)."""
        s = self.offset_step
        return (min(1.0, max(0.0, x + dx * s)), min(1.0, max(0.0, y + dy * s)))

    def best_offset(self, x: float, y: float, tx: float, ty: float,
                    among=None) -> tuple[int, int]:
        """The offset that brings (x, y) closest to (tx, ty); ties go to the smallest move.
        `among`: the offsets to choose from (default: all)."""

        def key(d):
            px, py = self.apply_offset(x, y, *d)
            return ((px - tx) ** 2 + (py - ty) ** 2, abs(d[0]) + abs(d[1]), d)

        return min(self.offsets() if among is None else among, key=key)

    # ---- ids (need a tokenizer that was extended with this vocabulary) -------------------
    def token_ids(self, tokenizer) -> dict[str, int]:
        """Map every spatial token to its id in `tokenizer`; raises if one is missing."""
        ids = tokenizer.convert_tokens_to_ids(self.all_tokens())
        unk = getattr(tokenizer, "unk_token_id", None)
        missing = [t for t, i in zip(self.all_tokens(), ids) if i is None or i == unk]
        if missing:
            raise ValueError(
                f"{len(missing)} spatial tokens are not in the tokenizer (first: {missing[0]}); "
                "extend it with tokens.extend first"
            )
        return dict(zip(self.all_tokens(), ids))

    # ---- persistence next to a checkpoint ------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / VOCAB_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> SpatialVocab:
        path = Path(directory) / VOCAB_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{path}: no spatial vocabulary here; run `python -m tokens.extend` on the model"
            ) from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        known = {"grid_size", "offset_radius", "offset_step_cells"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown fields {sorted(unknown)}; expected {sorted(known)}")
        return cls(**data)


DEFAULT_VOCAB = SpatialVocab()
