"""The task of a classifier: one label per image, or any number of findings."""

from __future__ import annotations

import enum


class Task(enum.StrEnum):
    """How class logits turn into probabilities."""

    SINGLE_LABEL = "single_label"  # one class per image: softmax over classes (ISIC-2018)
    MULTI_LABEL = "multi_label"  # any number of findings: independent sigmoids (ChestX-ray14)

    @property
    def phrase(self) -> str:
        """How people (and reports' ``task`` field) write it: "single-label" or "multi-label"."""
        return self.value.replace("_", "-")
