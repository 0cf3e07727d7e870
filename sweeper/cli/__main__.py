"""``python -m sweeper.cli``: what a submitted Ray Job runs on the head node."""

from sweeper.cli.app import main

main()
