"""The ``deconvsr`` command line: :mod:`.main` (``main``, ``CLIError``, exit codes) and one
module per subcommand. ``python -m deconvsr.sw.cli`` runs it too."""
