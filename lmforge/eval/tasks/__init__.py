"""The project's lm-eval task files (YAML + JSON-lines data) and their data builder."""
