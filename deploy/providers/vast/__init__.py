"""Provider `vast`: renting a GPU instance on Vast.ai through the official `vastai` SDK (provider.py)."""
