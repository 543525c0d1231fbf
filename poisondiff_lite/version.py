"""The package version (pyproject.toml holds the same number), in a module of its own so that any module can
name it without importing the package's face."""

__version__ = "0.1.0"
