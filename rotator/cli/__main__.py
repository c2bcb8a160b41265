"""``python -m rotator.cli``."""

from . import main

main()
