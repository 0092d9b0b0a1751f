"""Phone-set folding: map the labels of an alignment (ARPAbet, TIMIT, espeak) onto 41 classes.

The phoneme probe of the VQ-VAE paper predicts 41 classes: the 39 ARPAbet phones of CMUdict plus
``sil`` (silence) and ``spn`` (spoken noise). :class:`PhoneFolding` maps the labels of one phone
set onto those classes, from one editable table, ``phone_folding.tsv`` (columns ``set label
class``; ``class`` ``-`` means "excluded": the label has no class and its frames are left out).

Before lookup a label is normalised by its set's rules:

- ``arpabet``: case-insensitive; stress digits are stripped (``AH0`` -> ``ah``);
- ``timit61``: case-insensitive;
- ``espeak``: case-sensitive (``D`` is dh, ``d`` is d); leading stress marks ``' , % =`` are
  stripped (``'aU`` -> ``aU``); pauses (labels starting with ``_``) fall back to ``_``.

Other set names (in a user's own table) match labels exactly. A blank label is ``sil`` in every
set. A table may list its own target classes as rows of the set ``classes`` (``classes  aa  aa``);
without such rows the classes are :data:`PHONE_CLASSES`.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from ..errors import UserError
from ..fileio import user_path
from .alignments import Segment

PHONE_CLASSES: tuple[str, ...] = (
    "aa",
    "ae",
    "ah",
    "ao",
    "aw",
    "ay",
    "b",
    "ch",
    "d",
    "dh",
    "eh",
    "er",
    "ey",
    "f",
    "g",
    "hh",
    "ih",
    "iy",
    "jh",
    "k",
    "l",
    "m",
    "n",
    "ng",
    "ow",
    "oy",
    "p",
    "r",
    "s",
    "sh",
    "t",
    "th",
    "uh",
    "uw",
    "v",
    "w",
    "y",
    "z",
    "zh",
    "sil",
    "spn",
)
"""The 41 probe classes: the 39 CMUdict ARPAbet phones (alphabetical), then sil and spn."""

FOLDING_FILE = Path(__file__).with_name("phone_folding.tsv")
"""The packaged folding table."""

PACKAGED_SETS = ("arpabet", "timit61", "espeak")
"""The phone sets of :data:`FOLDING_FILE`, in the order :func:`guess_phone_set` prefers on ties."""

EXCLUDED = "-"
"""The class of labels that have none (TIMIT's glottal stop ``q``): their segments are dropped."""

CLASSES_SET = "classes"
"""The pseudo-set whose rows (``classes  <name>  <name>``) list a table's own target classes."""

HEADER = ("set", "label", "class")

_CASE_INSENSITIVE = ("arpabet", "timit61")
_ARPABET_STRESS = re.compile(r"(?<=[A-Za-z])[012]$")
_ESPEAK_STRESS = "',%="


@dataclass(frozen=True)
class PhoneFolding:
    """The folding of one phone set onto ``classes``; build it with :meth:`load`."""

    phone_set: str
    table: Mapping[str, str]
    """Normalised label -> class (or :data:`EXCLUDED`)."""
    classes: tuple[str, ...]
    path: Path
    """The table file it was read from."""

    @classmethod
    def load(cls, phone_set: str, path: str | os.PathLike | None = None) -> PhoneFolding:
        """The folding of ``phone_set`` from the table at ``path`` (default :data:`FOLDING_FILE`).

        Raises UserError for a missing or malformed table or a set the table does not have.
        """
        path = user_path(path) if path is not None else FOLDING_FILE
        tables, classes = _read_table(path)
        if phone_set not in tables:
            raise UserError(
                f"Phone set '{phone_set}' is not in {path}; choose one of: "
                f"{', '.join(tables) or 'none (the file has no rows)'}."
            )
        return cls(phone_set, tables[phone_set], classes, path)

    def fold(self, label: str) -> str | None:
        """The class of ``label``; None when the label is excluded. Blank labels are ``sil``.

        Raises UserError for a label the table does not know.
        """
        if not label.strip():
            return "sil"
        for key in _lookup_keys(self.phone_set, label.strip()):
            if key in self.table:
                target = self.table[key]
                return None if target == EXCLUDED else target
        key = _lookup_keys(self.phone_set, label.strip())[-1]
        where = (
            f"to a copy of {self.path} and pass that copy as `folding`"  # the packaged table stays as shipped
            if self.path == FOLDING_FILE
            else f"to {self.path}"
        )
        raise UserError(
            f"Phone '{label}' is not in the '{self.phone_set}' folding of {self.path}; add a line "
            f"'{self.phone_set}<TAB>{key}<TAB><class>' {where} (or choose another phone set)."
        )

    def knows(self, label: str) -> bool:
        """True when :meth:`fold` has an answer for ``label`` (a class or excluded)."""
        return not label.strip() or any(key in self.table for key in _lookup_keys(self.phone_set, label.strip()))

    def fold_segments(self, segments: Iterable[Segment]) -> list[Segment]:
        """Relabel ``segments`` with their classes, drop excluded ones, merge touching repeats.

        Two consecutive segments that fold to the same class are merged when the first ends
        where the second starts (``b`` after ``bcl`` becomes one ``b``); across a gap (an excluded
        segment, or unlabelled time) they stay apart. Segments may be ``(start, end, label)``.
        """
        folded: list[Segment] = []
        for segment in segments:
            if not isinstance(segment, Segment):
                segment = Segment(*segment)
            target = self.fold(segment.label)
            if target is None:
                continue
            last = folded[-1] if folded else None
            if last is not None and last.label == target and abs(last.end - segment.start) < 1e-9:
                folded[-1] = Segment(last.start, segment.end, target)
            else:
                folded.append(Segment(segment.start, segment.end, target))
        return folded


def guess_phone_set(labels: Iterable[str]) -> str:
    """The packaged phone set that knows the most of the distinct ``labels``.

    Ties go to the earlier set of :data:`PACKAGED_SETS` (arpabet first).
    """
    distinct = {label.strip() for label in labels if label.strip()}
    foldings = [PhoneFolding.load(name) for name in PACKAGED_SETS]
    scores = [sum(folding.knows(label) for label in distinct) for folding in foldings]
    return PACKAGED_SETS[scores.index(max(scores))]


# ----------------------------------------------------------------------------------------------
# Helpers


def _lookup_keys(phone_set: str, label: str) -> list[str]:
    """The table keys to try for ``label``, best first (the last is the fully normalised one)."""
    if phone_set == "arpabet":
        low = label.lower()
        return [low, _ARPABET_STRESS.sub("", low)]
    if phone_set == "timit61":
        return [label.lower()]
    if phone_set == "espeak":
        keys = [label, label.lstrip(_ESPEAK_STRESS) or label]
        return keys + ["_"] if label.startswith("_") else keys
    return [label]


def _table_key(phone_set: str, label: str) -> str:
    """How a label in the table is stored: lower case for the case-insensitive sets."""
    return label.lower() if phone_set in _CASE_INSENSITIVE else label


def _read_table(path: Path) -> tuple[dict[str, Mapping[str, str]], tuple[str, ...]]:
    """Parse a folding TSV: ({set: {normalised label: class}}, target classes); validated."""
    if not path.is_file():
        raise UserError(f"Phone folding table {path} does not exist; check the path.")
    stat = path.stat()
    return _parse_table(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _parse_table(path: Path, mtime_ns: int, size: int) -> tuple[dict[str, Mapping[str, str]], tuple[str, ...]]:
    """:func:`_read_table` for one version of the file (cached: aligners load it per word)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"Cannot read phone folding table {path} ({exc.__class__.__name__}); save it as UTF-8 text."
        ) from None
    rows: list[tuple[int, str, str, str]] = []
    header_seen = False
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [field.strip() for field in line.split("\t")]
        if len(fields) != 3 or not all(fields):
            raise UserError(
                f"Line {number} of phone folding table {path} does not have three "
                "tab-separated fields; write it as 'set<TAB>label<TAB>class'."
            )
        if not header_seen:
            if tuple(f.lower() for f in fields) != HEADER:
                raise UserError(
                    f"Phone folding table {path} does not start with the header "
                    "'set<TAB>label<TAB>class'; add it above the first row."
                )
            header_seen = True
            continue
        set_name, label, target = fields
        rows.append((number, set_name, label, target))

    classes = tuple(label for _, name, label, _ in rows if name == CLASSES_SET) or PHONE_CLASSES
    tables: dict[str, dict[str, str]] = {}
    first_line: dict[tuple[str, str], int] = {}
    for number, name, label, target in rows:
        if name == CLASSES_SET:
            continue
        if target != EXCLUDED and target not in classes:
            raise UserError(
                f"Line {number} of phone folding table {path} maps '{label}' to "
                f"'{target}', which is not a class; use one of "
                f"{' '.join(classes)} or '-' to exclude it."
            )
        key = _table_key(name, label)
        if (name, key) in first_line:
            raise UserError(
                f"Line {number} of phone folding table {path} repeats label "
                f"'{label}' of set '{name}' (first on line "
                f"{first_line[name, key]}); keep one of the two lines."
            )
        first_line[name, key] = number
        tables.setdefault(name, {})[key] = target
    return {name: MappingProxyType(table) for name, table in tables.items()}, classes
