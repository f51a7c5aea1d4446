"""Out-of-office subjects: the last resort for auto-replies that carry no header.

Many vacation responders (Outlook/Exchange in some set-ups, Apple iCloud, old
Lotus Notes, web-mail "away" settings) mark their replies only by a localised
subject prefix. The list below is what mail clients and servers write, in the
languages contact centres meet most; it is documented in
``docs/plugins/autoreply.md``.

Matching is case-insensitive and **anchored at the start of the subject**: the
phrase must be followed by a colon (``Automatic reply: your order``) or be the
whole subject (``Out of Office``). So a person's ``Re: out of office policy
question`` or ``Out of office hours support?`` is not an auto-reply, and
neither is a reply *to* an auto-reply (``Re: Automatic reply: ...``), which a
person wrote.
"""

from __future__ import annotations

import re

#: Phrases that open an auto-reply's subject (compared case-insensitively).
OUT_OF_OFFICE_PREFIXES: tuple[str, ...] = (
    # English
    "out of office",
    "out of the office",
    "out-of-office",
    "out of office autoreply",
    "out of office auto reply",
    "out of office reply",
    "automatic reply",
    "automatic response",
    "auto reply",
    "auto-reply",
    "autoreply",
    "auto response",
    "auto-response",
    "autoresponse",
    "auto",
    # German
    "abwesenheitsnotiz",
    "automatische abwesenheitsnotiz",
    "automatische antwort",
    "abwesend",
    # French
    "réponse automatique",
    "reponse automatique",
    "absence du bureau",
    "absent du bureau",
    "message d'absence",
    # Spanish
    "respuesta automática",
    "respuesta automatica",
    "fuera de la oficina",
    "fuera de oficina",
    # Dutch
    "afwezig",
    "automatisch antwoord",
    "afwezigheidsbericht",
    "niet aanwezig",
    # Italian
    "risposta automatica",
    "fuori sede",
    "fuori ufficio",
    # Portuguese
    "resposta automática",
    "resposta automatica",
    "ausente do escritório",
    "fora do escritório",
    # Scandinavian and Finnish
    "autosvar",
    "automatisk svar",
    "auto svar",
    "frånvaro",
    "fravær",
    "fraværende",
    "ikke på kontoret",
    "automaattinen vastaus",
    # Polish, Czech, Turkish
    "automatyczna odpowiedź",
    "poza biurem",
    "automatická odpověď",
    "otomatik yan\u0131t",  # dotless i
)

#: Phrases too short or too common to be a whole subject on their own: they
#: only count when a colon follows (``Auto: your order``, not ``Auto``).
COLON_ONLY: frozenset[str] = frozenset({"auto"})

#: Lotus Notes / HCL Domino: ``Jane Doe is out of the office.`` optionally with
#: ``(returning 05/05/2025)`` or ``until ...``; nothing else may follow, so
#: ``Anna is out of the office next week - who covers?`` is a person writing.
#: Each repeat is taken whole: the blanks around the final dot were two
#: adjacent repeats, and with "until ..." before them a long run of blanks took
#: cubic time.
_NOTES_FORM = re.compile(
    r"[^:]{1,100}\bis out of (?:the )?office"
    r"(?:\s+until\b[^?]*+|\s*+\([^)]*+\))?\s*+(?:\.\s*+)?",
    re.IGNORECASE,
)


def _prefix_pattern() -> re.Pattern[str]:
    # longest first, so "out of office autoreply" wins over "out of office"
    phrases = sorted(OUT_OF_OFFICE_PREFIXES, key=len, reverse=True)
    alternatives = "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in phrases)
    # a colon (ASCII or full-width) may follow after spaces ("Réponse automatique :")
    return re.compile(rf"\s*(?P<phrase>{alternatives})\s*(?P<colon>[:\uff1a])?", re.IGNORECASE)


_PREFIX = _prefix_pattern()


def out_of_office_subject(subject: str) -> bool:
    """True when *subject* is written the way out-of-office replies write it."""
    match = _PREFIX.match(subject)
    if match is not None:
        if match.group("colon"):
            return True
        rest = subject[match.end() :].strip(" \t.!-")
        phrase = " ".join(match.group("phrase").casefold().split())
        if not rest and phrase not in COLON_ONLY:
            return True
    return _NOTES_FORM.fullmatch(subject.strip()) is not None
