"""Data drift from profiles: mergeable sketches of training and serving data, compared.

>>> from pipeline_sdk import drift
>>> baseline = drift.Profile.from_columns({"age": [31, 45, 27, 52], "plan": ["a", "b", "a", "a"]})
>>> baseline.features["age"].mean
38.75

numpy and datasketches come with the ``drift`` extra (``pip install 'mlobs-pipeline-sdk[drift]'``);
scipy is imported only when profiles are compared, pandas only by :meth:`Profile.from_frame`.
"""

from .codec import CHUNK_MAX_BYTES
from .features import (
    DISCRETE_MAX,
    FREQUENT_LG_MAX_K,
    KLL_K,
    CategoricalFeature,
    Feature,
    NullFeature,
    NumericFeature,
)
from .monitor import Monitor
from .profile import Profile
from .report import METHODS, DriftReport, FeatureDrift, Test, compare, default_test
from .types import FeatureType

__all__ = [
    "CHUNK_MAX_BYTES",
    "DISCRETE_MAX",
    "FREQUENT_LG_MAX_K",
    "KLL_K",
    "METHODS",
    "CategoricalFeature",
    "DriftReport",
    "Feature",
    "FeatureDrift",
    "FeatureType",
    "Monitor",
    "NullFeature",
    "NumericFeature",
    "Profile",
    "Test",
    "compare",
    "default_test",
]
