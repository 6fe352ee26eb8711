"""The two classes and three splits every part of the trainer names (no imports: `scan` runs without NumPy)."""

CLASSES = ("nonviolent", "violent")  # label index = position; the violent probability is column 1
SPLITS = ("train", "val", "test")
