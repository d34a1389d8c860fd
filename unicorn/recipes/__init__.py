"""Shipped self-play recipes: data directories only (``toyworld``, ``unicorn-official``), loaded and validated by
``unicorn.selfplay.recipe.load_recipe``. Copy one, edit its JSON files and pass the directory as ``--recipe``."""
