"""A package, so that pytest puts the repository root on sys.path and `from tests.helpers import ...` works
under plain `pytest` as under `python -m pytest`, from any directory; test modules get unique dotted names."""
