"""Shifted test data: sensor faults (`sensor`, `suite`) and life changes (`life`), the
stress test of `tailorml stress` (`job`, `report`)."""
