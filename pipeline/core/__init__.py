"""Foundations every other package uses: the 14 finding names, the one error type, atomic files, where data lives."""
