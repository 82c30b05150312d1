"""Experiments: personalization methods x settings x seeds over individuals, resumable."""
