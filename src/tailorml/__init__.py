"""tailorml: personalize small deep-learning models for human-centric sensing, safely."""

__version__ = "0.1.0"
