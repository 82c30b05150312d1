"""tailorml: personalize small deep-learning models for human-centric sensing, safely."""

import os

# torch's OpenMP threads spin while they wait for each other (GNU OpenMP's default). Our
# ops are small, so they wait at every op; when another process holds one of the two
# cores, a training step took 20x longer on 2 threads than on 1 (BENCHMARKS.md, "Speed
# under load"). Passive waiting sleeps instead. Set before torch loads OpenMP, which is why
# it lives here; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
