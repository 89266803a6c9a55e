"""The ``prunekit`` command line: one thin command per file, registered in :mod:`prunekit.cli.main`."""
