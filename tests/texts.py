"""Captions the adapter tests encode (shared so that the parity tests and the fixtures read the same sentences)."""

CAPTIONS = ["a dog runs on the grass", "two cats sit in a window next to a red car", "a man rides a bike"]
LONG_CAPTION = " ".join(["a man rides a red bike down the green street"] * 20)  # 200 words: past every token limit
