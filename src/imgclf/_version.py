"""The package version, on the ground floor: run.json records it, and the package root
(which stands on the api floor) re-exports it."""

__version__ = "0.2.0"
