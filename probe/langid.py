"""Which language a text is in: lingua's offline identifier (its models ship in the wheel) over
all 75 languages it knows, answered as ISO 639-3 codes (``ell``, ``ara``); ``iso639_3`` turns
the suite's FLORES codes into them for comparison."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from .errors import DataError
from .languages import canonical, display_name

# FLORES codes whose ISO 639-3 code is an individual language that lingua files under its
# macrolanguage (Standard Arabic -> Arabic, Western Persian -> Persian, ...).
MACRO = {"arb": "ara", "pes": "fas", "zsm": "msa", "ekk": "est", "lvs": "lav", "azj": "aze",
         "khk": "mon", "swh": "swa", "uzn": "uzb", "npi": "nep", "gaz": "orm", "plt": "mlg"}


@functools.lru_cache(maxsize=1)
def _detector():
    from lingua import LanguageDetectorBuilder

    return LanguageDetectorBuilder.from_all_languages().build()


def iso639_3(language: str) -> str:
    """The ISO 639-3 code lingua uses for a language (any spelling the suite accepts)."""
    code = canonical(language, "language").split("_")[0]
    return MACRO.get(code, code)


def check_identifiable(language: str) -> None:
    """A clear error when lingua cannot recognise ``language`` (before any generation)."""
    from lingua import IsoCode639_3, Language

    code = iso639_3(language)
    try:
        Language.from_iso_code_639_3(IsoCode639_3.from_str(code))
    except (ValueError, AttributeError):
        raise DataError(f"the language identifier (lingua) does not know "
                        f"{display_name(canonical(language, 'language'))} ({code}); the "
                        "off-target rate cannot be measured for it") from None


def identify(texts: Sequence[str]) -> list[str | None]:
    """The ISO 639-3 code of each text's language, or None where lingua cannot tell (empty
    or too short a text)."""
    found = _detector().detect_languages_in_parallel_of(list(texts))
    return [None if x is None else x.iso_code_639_3.name.lower() for x in found]


def off_target(texts: Sequence[str], language: str, found: Sequence[str | None] | None = None
               ) -> dict[str, float | int | dict[str, int]]:
    """The share of ``texts`` not identified as ``language`` (unidentifiable ones included),
    how many could not be identified, and the languages found, most frequent first; ``found``
    passes identifications already made."""
    expected = iso639_3(language)
    found = identify(texts) if found is None else list(found)
    counts: dict[str, int] = {}
    for code in found:
        counts[code or "unidentified"] = counts.get(code or "unidentified", 0) + 1
    wrong = sum(code != expected for code in found)
    return {"off_target_rate": wrong / len(found) if found else float("nan"),
            "unidentified": counts.get("unidentified", 0),
            "languages_found": dict(sorted(counts.items(), key=lambda kv: -kv[1]))}
