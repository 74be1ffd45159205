"""Instructor tooling for the nbgrader labs.

A lab is its source notebook ``solutions/<lab>/<lab>.ipynb`` plus its checks module
``rlcourse.grading.<lab>`` (the hidden checks the notebook's test cells call).

* :mod:`rlcourse.grading.common`: what every lab's checks share (pins, tolerances, the graded
  run's protocol, the evaluated-return check).
* :mod:`rlcourse.grading.release`: ``labs/`` and the example submissions from ``solutions/``.
* :mod:`rlcourse.grading.pins`: ``rlcourse pin``, the source notebook run on several seeds.
* :mod:`rlcourse.grading.pipeline`: generate, autograde, feedback and export (``rlcourse grade``).
* :mod:`rlcourse.grading.feedback` and :mod:`rlcourse.grading.sanitize`: what students see.
* :mod:`rlcourse.grading.sandbox`: run a command (a submission) in a bubblewrap sandbox: no
  network, read-only environment, solutions and pins hidden, resource limits.

The course configuration is ``autograder/nbgrader_config.py``; every nbgrader step runs
through nbgrader's own command line with that file.
"""
