"""Command-line entry points. They only parse arguments and call into the package."""
