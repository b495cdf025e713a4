"""Text tools with no data to download: tokenizer, stop words, sentence splitter, chunker."""

from __future__ import annotations

import re
from collections.abc import Iterable

_TOKEN = re.compile(r"[A-Za-z]+(?:'[a-z]+)?|\d+(?:\.\d+)?|[^\sA-Za-z\d]")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:'[a-z]+)?")
_SPACE = re.compile(r"\s+")

STOP_WORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    tell explain describe give show please want know like get make thing things something
    anything stuff use used using work works way ways does mean means much many may might
    shall must let lets one ones well really good best better new
    """.split()
)

# Words that make a question researchable only together with a subject.
VAGUE_WORDS = frozenset(
    "help info information question questions topic topics overview general everything "
    "details detail report research summary summarize summarise".split()
)

_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "Mr.", "Dr.", "No.", "al.")


def tokens(text: str) -> list[str]:
    """Tokens as a subword-free tokenizer sees them: words, numbers, punctuation marks."""
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def normalize_space(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def content_words(text: str) -> list[str]:
    """Lower-cased words that carry meaning (stop words removed), in order, without repeats."""
    seen: dict[str, None] = {}
    for w in _WORD.findall(text):
        lw = w.lower().replace("'s", "")
        if len(lw) < 2 or lw in STOP_WORDS:
            continue
        seen.setdefault(lw, None)
    return list(seen)


def stem(word: str) -> str:
    """A light suffix stripper, enough to match 'decorators' with 'decorator'."""
    w = word.lower()
    for suffix in ("ations", "ation", "ings", "ing", "ies", "ers", "ed", "es", "er", "s"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            return w[: -len(suffix)]
    return w


def sentences(text: str) -> list[str]:
    """Split prose into sentences (whitespace normalized); code and grammar lines are skipped."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        if _looks_like_code(block):
            continue
        flat = normalize_space(" ".join(_without_headings(block.splitlines())))
        if not flat:
            continue
        start = 0
        for m in re.finditer(r"[.!?](?=\s+[\"'(\[]?[A-Z0-9])", flat):
            end = m.end()
            candidate = flat[start:end]
            if candidate.endswith(_ABBREVIATIONS):
                continue
            out.append(candidate.strip())
            start = end
        tail = flat[start:].strip()
        if tail:
            out.append(tail)
    return out


_CODEISH = re.compile(r"[=@{}<>]|\w\(|::|\*\*\*|\.\.\.")
_RULE = re.compile(r"\s*[*=\-~^#]{3,}\s*")


def _without_headings(lines: list[str]) -> list[str]:
    """Drop reStructuredText-style headings (a title line over a rule of * = - ~ ^ #)."""
    out: list[str] = []
    for line in lines:
        if _RULE.fullmatch(line):
            if out:
                out.pop()
            continue
        out.append(line)
    return out


def _looks_like_code(block: str) -> bool:
    lines = [ln for ln in block.splitlines() if ln.strip()]
    if not lines:
        return True
    if any("::=" in ln or ln.lstrip().startswith(">>>") for ln in lines):
        return True
    indented = sum(1 for ln in lines if ln.startswith("   "))
    return indented == len(lines) and not block.lstrip()[:1].isdigit()


def is_prose_sentence(sentence: str) -> bool:
    """A sentence worth quoting: complete, mostly words, of readable length."""
    words = sentence.split()
    if not 6 <= len(words) <= 70:
        return False
    if not sentence[:1].isupper() and sentence[:1] not in "\"'(":
        return False
    if sentence[-1:] not in ".!?" or _CODEISH.search(sentence):
        return False
    if sentence.startswith(("See also", "Note:", "Changed in", "Added in")):
        return False
    alpha = sum(1 for w in words if w.strip("\"'(),.:;").isalpha())
    return alpha / len(words) >= 0.6


def chunk(text: str, *, target: int = 1200, hard_max: int = 2000) -> list[str]:
    """Split a document into passages of about `target` characters on paragraph boundaries."""
    paragraphs = [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]
    out: list[str] = []
    buf: list[str] = []
    size = 0
    for para in _split_long(paragraphs, hard_max):
        if buf and size + len(para) > target:
            out.append("\n\n".join(buf))
            buf, size = [], 0
        buf.append(para)
        size += len(para) + 2
    if buf:
        out.append("\n\n".join(buf))
    return out


def _split_long(paragraphs: Iterable[str], hard_max: int) -> Iterable[str]:
    for para in paragraphs:
        while len(para) > hard_max:
            cut = para.rfind(". ", 0, hard_max)
            cut = cut + 1 if cut > hard_max // 3 else para.rfind(" ", 0, hard_max)
            if cut <= 0:
                cut = hard_max
            yield para[:cut].strip()
            para = para[cut:].strip()
        if para:
            yield para
