"""The published label sets and their class order.

Class order is the published order for known label sets (ISIC 2018: MEL, NV, BCC, AKIEC,
BKL, DF, VASC; the 14 ChestX-ray14 findings), also when a manifest or class folders use
those codes (only the codes present, in that order); otherwise sorted codes.

ChestX-ray14's ``No Finding`` (and a multi-label manifest's) is the empty label tuple: a
labelled sample whose multi-hot target is all zeros.
"""

from __future__ import annotations

from collections.abc import Mapping

ISIC_CODES: tuple[str, ...] = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
ISIC_NAMES: Mapping[str, str] = {
    "MEL": "Melanoma",
    "NV": "Melanocytic nevus",
    "BCC": "Basal cell carcinoma",
    "AKIEC": "Actinic keratosis / intraepithelial carcinoma (Bowen's)",
    "BKL": "Benign keratosis",
    "DF": "Dermatofibroma",
    "VASC": "Vascular lesion",
}
NIH_FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NIH_NAMES: Mapping[str, str] = {code: code.replace("_", " ") for code in NIH_FINDINGS}
NO_FINDING = "No Finding"


def ordered_label_space(codes: set[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Codes in their published order when the set is a known one, else sorted; names."""
    for known_order, known_names in ((ISIC_CODES, ISIC_NAMES), (NIH_FINDINGS, NIH_NAMES)):
        if codes and codes <= set(known_order):
            ordered = tuple(code for code in known_order if code in codes)
            return ordered, tuple(known_names[code] for code in ordered)
    ordered = tuple(sorted(codes))
    return ordered, ordered
