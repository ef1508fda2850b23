"""The ``slipstream`` command line: one small module per subcommand, each calling the library API."""
