"""Hard negatives by swapping two words of a caption, as SugarCrepe's swap subsets (and ARO's order tests) do.

``swap_obj`` exchanges two different object nouns of the same number ("a dog chasing a cat" -> "a cat chasing a
dog"), ``swap_att`` two different attribute words of the same kind, two colours or two sizes ("a red bus beside a
white car" -> "a white bus beside a red car"), never two words with only "and" or "or" between them.
The word lists are COCO's common objects and attributes; a caption with no such pair gives no negative. Swapping
keeps every word of the caption, so a text-only model that counts words cannot tell the two apart; only the
binding of words to what the image shows can.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["ATTRIBUTES", "KINDS", "OBJECTS", "swapped"]

_SINGULAR = """
man woman person boy girl child kid baby player guy lady dog cat horse cow elephant bear zebra giraffe bird sheep
car truck bus train plane airplane boat bicycle bike motorcycle table chair bench bed couch sofa plate bowl cup mug
glass bottle pizza sandwich cake banana apple broccoli carrot donut laptop phone keyboard computer television tv
clock vase book umbrella kite surfboard skateboard frisbee ball bat racket field street road beach ocean grass snow
tree building room kitchen bathroom toilet sink window wall door sign fence river hill mountain sky shirt hat helmet
jacket food counter desk floor park city wave box refrigerator fridge oven microwave tray bag suitcase cart pole
light tower bridge lake sidewalk shelf lamp rock sand dirt house
"""
_PLURAL = """
men women people boys girls children kids players dogs cats horses cows elephants bears zebras giraffes birds cars
trucks buses trains planes boats bicycles bikes motorcycles tables chairs benches beds plates bowls cups bottles
pizzas sandwiches cakes bananas apples carrots donuts laptops phones books umbrellas kites trees buildings signs
waves vegetables boxes bags suitcases poles lights rocks houses windows shelves
"""
OBJECTS: dict[str, str] = {w: "singular" for w in _SINGULAR.split()} | {w: "plural" for w in _PLURAL.split()}
_ATTRIBUTE_KINDS = {
    "colour": "red blue green yellow white black brown pink purple violet gray grey silver golden beige emerald",
    "size": "large small big little tall tiny huge",
    "material": "wooden metal plastic",
    "age": "old young new",
    "light": "dark bright",
    "wetness": "wet dry",
}
ATTRIBUTES: dict[str, str] = {w: kind for kind, words in _ATTRIBUTE_KINDS.items() for w in words.split()}
KINDS = ("swap_obj", "swap_att")

_WORD = re.compile(r"[A-Za-z]+")
_REPEATED = re.compile(r"\b(\w+),? (?:and|or) \1\b", re.IGNORECASE)


def _recase(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    return word.capitalize() if like[:1].isupper() else word.lower()


def swapped(caption: str, kind: str, rng: np.random.Generator) -> str | None:
    """``caption`` with two of its ``kind`` words exchanged (a pair drawn by ``rng`` among the candidates), or None
    when it has no two different words of that kind (of the same number, for objects; of the same kind of
    attribute, for attributes: a colour is never swapped with a size)."""
    if kind not in KINDS:
        raise ValueError(f"swap kind must be one of {', '.join(KINDS)}, got {kind!r}")
    # (start, end, word, word index). Words with nothing but "and"/"or" between them are not swapped: "a large white
    # room" and "a black and white cat" mean the same both ways.
    spans = [(m.start(), m.end(), m.group(), i) for i, m in enumerate(_WORD.finditer(caption))]
    words = [s[2].lower() for s in spans]
    if kind == "swap_obj":
        hits = [s for s in spans if s[2].lower() in OBJECTS]
        pairs = [(a, b) for i, a in enumerate(hits) for b in hits[i + 1 :]
                 if OBJECTS[a[2].lower()] == OBJECTS[b[2].lower()]]  # fmt: skip
    else:
        hits = [s for s in spans if s[2].lower() in ATTRIBUTES]
        pairs = [(a, b) for i, a in enumerate(hits) for b in hits[i + 1 :]
                 if ATTRIBUTES[a[2].lower()] == ATTRIBUTES[b[2].lower()]]  # fmt: skip
    pairs = [(a, b) for a, b in pairs
             if a[2].lower() != b[2].lower() and set(words[a[3] + 1 : b[3]]) - {"and", "or"}]  # fmt: skip
    results = [caption[: a[0]] + _recase(b[2], a[2]) + caption[a[1] : b[0]] + _recase(a[2], b[2]) + caption[b[1] :]
               for a, b in pairs]  # fmt: skip
    # "a gray and white cat in a white sink" must not become "a white and white cat"
    results = [r for r in results if not _REPEATED.search(r)]
    if not results:
        return None
    return results[int(rng.integers(len(results)))]
