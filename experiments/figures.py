"""Regenerate the figure set (same as `ntkngd figures`): python experiments/figures.py --help."""
import sys

from ntkngd.cli import main

if __name__ == "__main__":
    sys.exit(main(["figures", *sys.argv[1:]]))
