"""Runs the shared corpus through the real parser and the ``dsn`` plugin and
scores the results against the upstream projects' expectations.

Shared by ``test_corpus.py`` (which asserts floors) and usable by hand:
``.venv/bin/python -m tests.plugins.dsn.corpus_eval`` prints the table.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import defer

from postroom.model import FetchedMessage, Interaction, ParsedMessage, RawRef, Subtype
from postroom.parsing import DefaultParser, ParseLimits
from postroom.plugins.facade import PLUGIN_ERRORS_KEY, Hooks
from postroom_dsn import plugin
from tests.conftest import CORPUS, run
from tests.hooks.support import FakeConfig, FakeStore, hooks_with, make_ctx
from tests.plugins.analysis import analysed

NDR = Subtype.INBOUND_NDR.value
REPORT = Subtype.INBOUND_REPORT.value
CONFIG: dict[tuple[str | None, str], Any] = {
    ("email-processing", "ndr-senders-list"): list(plugin.DEFAULT_NDR_SENDERS)
}


def parse(path: Path) -> ParsedMessage:
    """The kernel's parse stage, run inline."""
    parser = DefaultParser(lambda fn, *args: defer.maybeDeferred(fn, *args))
    fetched = FetchedMessage(mailbox="corpus", source_key=path.name, raw=RawRef.from_path(path))
    return run(parser.parse(fetched, ParseLimits()))


def classify(hooks: Hooks, message: ParsedMessage) -> Interaction:
    ctx = make_ctx(config=FakeConfig(CONFIG), store=FakeStore())
    analysed(hooks, message, ctx)
    interaction = Interaction()
    verdict = run(hooks.classify(message, ctx, interaction))
    interaction.subtype = verdict.subtype
    interaction.attached_data.update(verdict.attached_data)
    return interaction


def recipients(data: dict[str, Any]) -> list[dict[str, Any]]:
    count = data.get("_DSNInfo.RecipientCount", 0)
    return [
        {
            key: data.get(f"_DSNInfo.Recipient{n}.{key}")
            for key in ("Recipient", "Action", "Status", "ReplyCode")
        }
        for n in range(1, int(count) + 1)
    ]


def raw_actions(data: dict[str, Any]) -> list[str]:
    count = int(data.get("_DSNRawInfo.RecipientCount", 0))
    return [str(data.get(f"_DSNRawInfo.Recipient{n}.Action", "")) for n in range(1, count + 1)]


@attrs.define
class Score:
    total: int = 0
    right: int = 0
    misses: list[str] = attrs.field(factory=list)

    def add(self, ok: bool, label: str) -> None:
        self.total += 1
        self.right += ok
        if not ok:
            self.misses.append(label)

    @property
    def ratio(self) -> float:
        return self.right / self.total if self.total else 1.0


@attrs.define
class Results:
    scores: dict[str, Score] = attrs.field(factory=lambda: defaultdict(Score))
    families: dict[str, Score] = attrs.field(factory=lambda: defaultdict(Score))
    crashes: list[str] = attrs.field(factory=list)
    #: upstream statuses the message does not state (Sisimai's inferences)
    inferred: list[str] = attrs.field(factory=list)

    def table(self) -> str:
        lines = [f"{'measure':58} {'right':>6} {'total':>6} {'ratio':>7}"]
        for name, score in sorted(self.scores.items()):
            lines.append(f"{name:58} {score.right:6} {score.total:6} {score.ratio:7.1%}")
        lines.append("")
        lines.append("classification of bounces by vendor family (sisimai engine):")
        for name, score in sorted(self.families.items()):
            if score.right != score.total:
                lines.append(f"  {name:30} {score.right}/{score.total}  misses: {score.misses}")
        perfect = [n for n, s in sorted(self.families.items()) if s.right == s.total]
        lines.append(f"  all right ({len(perfect)} families): {', '.join(perfect)}")
        lines.append("")
        lines.append(
            f"upstream status codes not stated in the message (inferred; not measured): "
            f"{len(self.inferred)} messages"
        )
        lines.extend(f"  {item}" for item in self.inferred)
        return "\n".join(lines)


def stated_in(code: str, texts: list[str]) -> bool:
    """Whether *code* (``5.1.1``) is written in the message as a status code,
    not only inferred upstream from wording (Sisimai derives ``5.2.2`` from
    "mailbox full" when the text states no code)."""
    token = re.compile(rf"(?<![\d.]){re.escape(code)}(?!\d|\.\d)")
    return any(token.search(text) for text in texts)


def message_texts(path: Path, message: ParsedMessage) -> list[str]:
    """The raw message and every decoded text part (base64, ISO-2022-JP...)."""
    return [path.read_bytes().decode("latin-1"), *(p.text for p in message.parts if p.text)]


def _status_ok(
    got: list[dict[str, Any]], expected: list[dict[str, Any]], texts: list[str], count_ok: bool
) -> tuple[bool | None, list[str]]:
    """Whether the statuses agree where upstream's is a code stated in the
    message (None: nothing to compare), and upstream's codes that the message
    does not state (inferred: not measured). Pseudo-codes ``x.0.9xx`` are
    Sisimai's own and skipped."""
    real: list[str | None] = [
        e.get("status") if not e.get("status_is_sisimai_pseudo_code") else None for e in expected
    ]
    stated = [code is not None and stated_in(code, texts) for code in real]
    inferred = [code for code, ok in zip(real, stated, strict=True) if code and not ok]
    if not any(stated):
        return None, inferred
    if not count_ok:
        return False, inferred
    pairs = [(g.get("Status"), e) for g, e, ok in zip(got, real, stated, strict=True) if ok]
    return all(g == e for g, e in pairs), inferred


def evaluate(corpus: Path = CORPUS) -> Results:
    hooks = hooks_with(("dsn", plugin))
    results = Results()
    scores = results.scores
    for entry in json.loads((corpus / "sisimai.json").read_text()):
        name = entry["file"].rsplit("/", 1)[-1]
        try:
            message = parse(corpus / entry["file"])
            interaction = classify(hooks, message)
        except Exception as exc:  # counted, and the test fails on any
            results.crashes.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        if PLUGIN_ERRORS_KEY in interaction.attached_data:
            results.crashes.append(f"{name}: {interaction.attached_data[PLUGIN_ERRORS_KEY]}")
        data = interaction.attached_data
        subtype = interaction.subtype
        expected = entry["expected"]
        kind = entry["kind"]
        has_ds = entry["derived"]["has_delivery_status"]
        if kind == "normal":
            group = {"arf-feedback": "arf", "autoreply": "autoreply"}.get(
                entry.get("subkind", ""), "non-bounce"
            )
            scores[f"sisimai {group}: not an NDR"].add(subtype != NDR, name)
            continue
        got = recipients(data)
        real_statuses = [
            r["status"]
            for r in expected["recipients"]
            if not r.get("status_is_sisimai_pseudo_code")
        ]
        if subtype == REPORT:
            # no recipient failed: right when upstream's statuses say so too,
            # or the report's own Action fields do
            actions = raw_actions(data)
            ok = all(not s.startswith("5") for s in real_statuses) or bool(
                actions and all(a.lower() not in ("failed", "failure") for a in actions)
            )
        else:
            ok = subtype == NDR
        family = "delivery-status" if has_ds else "vendor format"
        scores[f"sisimai {family}: NDR (or Report, none failed)"].add(ok, name)
        results.families[expected.get("sisimai_engine", "?")].add(ok, name)
        if not ok:
            continue
        count_ok = len(got) == expected["recipient_count"]
        scores[f"sisimai {family}: recipient count"].add(count_ok, name)
        texts = message_texts(corpus / entry["file"], message)
        status_ok, inferred = _status_ok(got, expected["recipients"], texts, count_ok)
        measure = f"sisimai {family}: status codes stated in the message"
        if status_ok is not None:
            scores[measure].add(status_ok, name)
        if inferred:
            results.inferred.append(f"{name} ({family}): {', '.join(inferred)}")
        if not has_ds:
            addresses = all(r["Recipient"] and "@" in r["Recipient"] for r in got)
            scores["sisimai vendor format: every recipient has an address"].add(
                bool(got) and addresses, name
            )
    for entry in json.loads((corpus / "stalwart.json").read_text()):
        name = entry["file"].rsplit("/", 1)[-1]
        interaction = classify(hooks, parse(corpus / entry["file"]))
        group = f"stalwart {entry.get('subkind', 'normal')}"
        scores["stalwart normal messages: neither NDR nor Report"].add(
            interaction.subtype not in (NDR, REPORT), f"{group} {name}"
        )
    for entry in json.loads((corpus / "mimekit.json").read_text()):
        name = entry["file"].rsplit("/", 1)[-1]
        interaction = classify(hooks, parse(corpus / entry["file"]))
        data = interaction.attached_data
        if entry["kind"] == "mdn":
            scores["mimekit MDN: not ours"].add(not any(k.startswith("_DSN") for k in data), name)
            continue
        want: dict[str, Any] = {
            f"_DSNRawInfo.{k}": v for k, v in entry["expected"]["per_message"].items()
        }
        for n, fields in enumerate(entry["expected"]["per_recipient"], 1):
            want.update({f"_DSNRawInfo.Recipient{n}.{k}": v for k, v in fields.items()})
        want["_DSNRawInfo.RecipientCount"] = len(entry["expected"]["per_recipient"])
        have = {k: v for k, v in data.items() if k.startswith("_DSNRawInfo.")}
        scores["mimekit DSN: _DSNRawInfo exactly as upstream"].add(have == want, name)
        scores["mimekit DSN: NDR"].add(interaction.subtype == NDR, name)
    return results


def _shown(text: str) -> str:
    return re.sub(r"\s+", " ", text)


if __name__ == "__main__":
    results = evaluate()
    print(results.table())
    for name, score in sorted(results.scores.items()):
        if score.misses:
            print(f"{name}: {_shown(', '.join(score.misses))}")
    print("crashes:", results.crashes)
