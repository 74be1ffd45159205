"""Small helpers used by the lecture notebooks in ``course/`` and the lab notebooks (kept here so the notebooks stay short)."""
