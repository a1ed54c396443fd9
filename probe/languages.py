"""Language names: every accepted spelling resolves to one FLORES-200 code (``eng_Latn``)."""

from __future__ import annotations

import re

from .errors import DataError

# FLORES-200 code -> (English name, ISO 639-1, other accepted codes such as ISO 639-3 macro codes)
_LANGUAGES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "eng_Latn": ("English", "en", ("eng",)),
    "arb_Arab": ("Arabic", "ar", ("ara", "arb")),
    "ell_Grek": ("Greek", "el", ("ell", "gre")),
    "hin_Deva": ("Hindi", "hi", ("hin",)),
    "tur_Latn": ("Turkish", "tr", ("tur",)),
    "vie_Latn": ("Vietnamese", "vi", ("vie",)),
    "zho_Hans": ("Chinese", "zh", ("zho", "cmn", "chi", "zh-cn")),
    "deu_Latn": ("German", "de", ("deu", "ger")),
    "fra_Latn": ("French", "fr", ("fra", "fre")),
    "spa_Latn": ("Spanish", "es", ("spa",)),
    "rus_Cyrl": ("Russian", "ru", ("rus",)),
    "jpn_Jpan": ("Japanese", "ja", ("jpn",)),
    "swh_Latn": ("Swahili", "sw", ("swh", "swa")),
    "ben_Beng": ("Bengali", "bn", ("ben",)),
    "tha_Thai": ("Thai", "th", ("tha",)),
    "ita_Latn": ("Italian", "it", ("ita",)),
    "por_Latn": ("Portuguese", "pt", ("por",)),
    "nld_Latn": ("Dutch", "nl", ("nld", "dut")),
    "pol_Latn": ("Polish", "pl", ("pol",)),
    "ukr_Cyrl": ("Ukrainian", "uk", ("ukr",)),
    "kor_Hang": ("Korean", "ko", ("kor",)),
    "ind_Latn": ("Indonesian", "id", ("ind",)),
    "pes_Arab": ("Persian", "fa", ("pes", "fas", "per")),
    "heb_Hebr": ("Hebrew", "he", ("heb",)),
    "urd_Arab": ("Urdu", "ur", ("urd",)),
    "ron_Latn": ("Romanian", "ro", ("ron", "rum")),
    "ces_Latn": ("Czech", "cs", ("ces", "cze")),
    "swe_Latn": ("Swedish", "sv", ("swe",)),
    "fin_Latn": ("Finnish", "fi", ("fin",)),
    "hun_Latn": ("Hungarian", "hu", ("hun",)),
    "tam_Taml": ("Tamil", "ta", ("tam",)),
    "zho_Hant": ("Chinese (Traditional)", "zh-tw", ("zh-hant",)),
}

_ALIASES: dict[str, str] = {}
for _code, (_name, _iso1, _others) in _LANGUAGES.items():
    for _alias in (_code, _name, _iso1, *_others):
        _ALIASES[_alias.lower()] = _code

ENGLISH = "eng_Latn"
FLORES_CODE = re.compile(r"[a-z]{3}_[A-Z][a-z]{3}")
"""Any FLORES-200 code (``ace_Arab``) is accepted as itself, also beyond the named table above."""


def canonical(name: str, where: str = "") -> str:
    """Resolve ``name`` (``en``, ``eng``, ``eng_Latn``, ``English``) to its FLORES-200 code."""
    code = _ALIASES.get(name.strip().lower().replace("-", "_"), _ALIASES.get(name.strip().lower()))
    if code is None and FLORES_CODE.fullmatch(name.strip()):
        code = name.strip()
    if code is None:
        place = f" ({where})" if where else ""
        raise DataError(
            f"unknown language {name!r}{place}; use a FLORES-200 code such as 'eng_Latn', an "
            f"ISO 639 code such as 'en' or 'eng', or an English name; known: {', '.join(_LANGUAGES)}"
        )
    return code


def is_language(name: str) -> bool:
    """Whether ``name`` is any accepted spelling of a known language."""
    key = name.strip().lower()
    return (key in _ALIASES or key.replace("-", "_") in _ALIASES
            or FLORES_CODE.fullmatch(name.strip()) is not None)


def display_name(code: str) -> str:
    """English name of a canonical code (a FLORES code outside the table: the code itself)."""
    return _LANGUAGES[code][0] if code in _LANGUAGES else code


def iso639_1(code: str) -> str:
    """Two-letter code of a canonical code (``zho_Hans`` -> ``zh``), as data files name them."""
    return _LANGUAGES[code][1]


def known_languages() -> dict[str, str]:
    """Canonical code -> English name, for listings."""
    return {code: entry[0] for code, entry in _LANGUAGES.items()}
