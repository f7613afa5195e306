"""``python -m service.load FILE.csv``."""

from service.load.console import main

main()
