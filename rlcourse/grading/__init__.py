"""Instructor tooling for the nbgrader labs.

* :mod:`rlcourse.grading.release`: ``labs/`` and the example submissions from ``solutions/``.
* :mod:`rlcourse.grading.pins`: ``autograder/pinned_metrics.json`` from the reference solutions.
* :mod:`rlcourse.grading.pipeline`: generate, autograde, feedback and export (``rlcourse grade``).
* :mod:`rlcourse.grading.feedback`: keeps hidden tests out of the feedback students receive.
* :mod:`rlcourse.grading.lab2`: the hidden checks of lab 2 (PPO).

The course configuration is ``autograder/nbgrader_config.py``; every nbgrader step runs
through nbgrader's own command line with that file.
"""
