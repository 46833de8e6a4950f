"""Typer command-line interface: thin commands that parse arguments and call the layers below."""
