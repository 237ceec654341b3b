"""Verified launch: check everything the broker would load, seal it, then become the broker."""
