"""DVC stage entry points: one thin typer command per stage, run as ``python -m stages.<name>``."""
