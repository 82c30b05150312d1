"""`python -m tailorml` runs the CLI."""

from tailorml.cli import main

main()
