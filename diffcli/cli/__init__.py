"""The command line: one module per command or command group."""
