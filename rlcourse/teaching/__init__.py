"""Small helpers used by the lecture notebooks in ``course/`` (kept here so the notebooks stay short)."""
