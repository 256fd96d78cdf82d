"""Guided calibration sessions: a protocol's steps, walked one request at a time, with hardware work as tasks.

``session`` is what is stored, ``steps`` what a client is shown and how its
inputs are read, ``protocol`` what every protocol family shares (the bench it
drives, saving its result), one module per family (``pumps``, ``stirring``,
``od_standards``), ``registry`` which protocols this unit offers, and
``runner`` moves sessions on.
"""
