"""The command line: `tinydnabert COMMAND` (cli), the whole pipeline (quickstart), plots and verify."""
