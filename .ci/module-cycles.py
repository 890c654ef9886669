#!/usr/bin/env python3
"""Fails when sibling modules of a crate use each other (directly or around a loop).

Modules are files (`src/a.rs`, `src/a/b.rs`); a reference is a `crate::`, `self::` or `super::`
path (also inside `use` groups), resolved to the longest module it names. Two modules under the
same parent that reach each other (a/b/x uses a/c and a/c/y uses a/b) form a cycle; a module
using its own parent or children does not. Test code is left out (tests.rs, testutil.rs, and
from `#[cfg(test)]` to the end of a file).
Run from the repository root: `python3 .ci/module-cycles.py`; prints every cycle, exits 1 if any.
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
CRATES = ["proto", "classify", "runtime", "collector", "processor", "aggregator"]


def product_text(f: pathlib.Path) -> str:
    text = f.read_text(errors="replace")
    cut = text.find("#[cfg(test)]")
    text = text if cut < 0 else text[:cut]
    return re.sub(r"//[^\n]*", "", text)


def modules(src: pathlib.Path) -> set[tuple[str, ...]]:
    out = set()
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src).with_suffix("").parts
        if rel[0] not in ("lib", "main", "bin"):
            out.add(rel[:-1] if rel[-1] == "mod" else rel)
    return out


def resolve(segments: list[str], mods: set[tuple[str, ...]]) -> tuple[str, ...]:
    """The longest module path that `segments` starts with."""
    best: tuple[str, ...] = ()
    for i in range(1, len(segments) + 1):
        if tuple(segments[:i]) in mods:
            best = tuple(segments[:i])
    return best


def paths(text: str) -> list[tuple[str, list[str]]]:
    """(anchor, segments) of every path starting at crate::, super::... or self::, with
    `use` groups expanded one level."""
    out = []
    for m in re.finditer(r"\b((?:crate|self|(?:super::)*super))::((?:\w+::)*)(\{[^;]*?\}|\w+)", text):
        anchor, mid, last = m.group(1), m.group(2), m.group(3)
        base = [s for s in mid.split("::") if s]
        if last.startswith("{"):
            for item in re.split(r",(?![^{]*\})", last[1:-1]):
                segs = re.findall(r"\w+", item.split("{")[0])
                out.append((anchor, base + segs[:1] if segs else base))
        else:
            out.append((anchor, base + [last]))
    return out


def refs(text: str, path: tuple[str, ...], mods) -> set[tuple[str, ...]]:
    found = set()
    for anchor, segs in paths(text):
        if anchor == "crate":
            absolute = segs
        elif anchor == "self":
            absolute = list(path) + segs
        else:
            ups = anchor.count("super")
            if ups > len(path):
                continue
            absolute = list(path[: len(path) - ups]) + segs
        target = resolve(absolute, mods)
        if target:
            found.add(target)
    return found


def graph(crate: pathlib.Path) -> dict[tuple[str, ...], set[tuple[str, ...]]]:
    """Edges between sibling modules: a reference from a/b/x to a/c/y is an edge a/b -> a/c.
    A module using its parent or its own children is not an edge."""
    src = crate / "src"
    mods = modules(src)
    edges: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
    for f in sorted(src.rglob("*.rs")):
        rel = f.relative_to(src).with_suffix("").parts
        if rel[-1] in ("tests", "testutil") or rel[0] in ("lib", "main", "bin"):
            continue
        path = rel[:-1] if rel[-1] == "mod" else rel
        for target in refs(product_text(f), path, mods):
            k = 0
            while k < min(len(path), len(target)) and path[k] == target[k]:
                k += 1
            if k < len(path) and k < len(target):
                edges.setdefault(path[: k + 1], set()).add(target[: k + 1])
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


bad = 0
for c in CRATES:
    edges = graph(root / c)
    for comp in cycles(edges):
        bad += 1
        name = lambda m: "::".join(m)
        detail = "; ".join(f"{name(a)} -> {', '.join(name(b) for b in sorted(edges[a] & set(comp)))}" for a in comp)
        print(f"{c}: module cycle {{{', '.join(name(m) for m in comp)}}}: {detail}")
sys.exit(1 if bad else 0)
