"""`python -m cardproof ...`: the same as the `cardproof` console script."""

from cardproof.console import entry

if __name__ == "__main__":
    entry()
