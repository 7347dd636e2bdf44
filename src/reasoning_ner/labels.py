"""Label handling as in the paper: lower-case natural-language labels, invalid labels dropped.

Each dataset's raw tag names map to the natural-language labels the model sees. The maps follow
the InstructUIE/ReasoningNER names (e.g. ``programlang`` -> ``program language``) so scores on
the raw files and on the InstructUIE JSON copies are comparable. Labels that map to one of
:data:`INVALID_LABELS` (misc, else, other, na, ...) are dropped from schema and gold unless the
caller keeps them, exactly as the reference's ``is_valid_label`` does.
"""

from __future__ import annotations

import re

#: Labels the reference drops everywhere (schema, gold and predictions).
INVALID_LABELS = frozenset({"", "na", "n a", "misc", "else", "other", "nan"})

CONLL2003_LABELS = {"PER": "person", "ORG": "organization", "LOC": "location", "MISC": "misc"}

# CrossNER tags are lower-case and unspaced; the natural-language names match InstructUIE's.
CROSSNER_LABELS = {
    "academicjournal": "academic journal",
    "album": "album",
    "algorithm": "algorithm",
    "astronomicalobject": "astronomical object",
    "award": "award",
    "band": "band",
    "book": "book",
    "chemicalcompound": "chemical compound",
    "chemicalelement": "chemical element",
    "conference": "conference",
    "country": "country",
    "discipline": "discipline",
    "election": "election",
    "enzyme": "enzyme",
    "event": "event",
    "field": "field",
    "literarygenre": "literary genre",
    "location": "location",
    "magazine": "magazine",
    "metrics": "metrics",
    "misc": "misc",
    "musicalartist": "musical artist",
    "musicalinstrument": "musical instrument",
    "musicgenre": "music genre",
    "organisation": "organization",
    "person": "person",
    "poem": "poem",
    "politicalparty": "political party",
    "politician": "politician",
    "product": "product",
    "programlang": "program language",
    "protein": "protein",
    "researcher": "researcher",
    "scientist": "scientist",
    "song": "song",
    "task": "task",
    "theory": "theory",
    "university": "university",
    "writer": "writer",
}

MIT_MOVIE_LABELS = {
    "ACTOR": "actor",
    "CHARACTER": "character",
    "DIRECTOR": "director",
    "GENRE": "genre",
    "PLOT": "plot",
    "RATING": "rating",
    "RATINGS_AVERAGE": "average ratings",
    "REVIEW": "review",
    "SONG": "song",
    "TITLE": "title",
    "TRAILER": "trailer",
    "YEAR": "year",
}

MIT_RESTAURANT_LABELS = {
    "Amenity": "amenity",
    "Cuisine": "cuisine",
    "Dish": "dish",
    "Hours": "hours",
    "Location": "location",
    "Price": "price",
    "Rating": "rating",
    "Restaurant_Name": "restaurant name",
}

# The InstructUIE copies already use natural-language names; only spelling variants need a map
# (CrossNER_music dev/test use "organisation" and "misc" where labels.json says "organization"
# and "else", a quirk inherited from InstructUIE).
INSTRUCTUIE_LABELS = {"organisation": "organization", "misc": "else"}

_SPACE = re.compile(r"\s+")


def clean_label(raw: str) -> str:
    """Lower-case, underscores to spaces, whitespace collapsed."""
    return _SPACE.sub(" ", str(raw).replace("_", " ")).strip().lower()


def is_valid_label(label: str) -> bool:
    return clean_label(label) not in INVALID_LABELS


def map_label(raw: str, label_map: dict[str, str] | None = None) -> str:
    """Map a raw tag through a dataset map (exact key first), then clean it."""
    if label_map:
        if raw in label_map:
            return label_map[raw]
        cleaned = clean_label(raw)
        if cleaned in label_map:
            return label_map[cleaned]
    return clean_label(raw)


def make_schema(labels: list[str] | set[str], keep_invalid: bool = False) -> list[str]:
    """The schema as the paper builds it: cleaned, deduplicated, sorted, invalid labels removed."""
    cleaned = {clean_label(lbl) for lbl in labels} - {""}
    return sorted(lbl for lbl in cleaned if keep_invalid or lbl not in INVALID_LABELS)
