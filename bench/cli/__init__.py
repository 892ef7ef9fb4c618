"""The ``bench`` command line; :func:`bench.cli.main.main` is its entry point. Importing this package is light."""
