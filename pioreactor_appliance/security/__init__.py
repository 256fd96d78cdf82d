"""Who may do what: the request policy and the pieces it is made of.

``policy`` decides, for each request and the route it matched, whether it may
run; ``hosts``, ``origins``, ``credentials``, ``signing`` and ``ratelimit``
each answer one question for it. ``docs/security.md`` is the user's view.
"""
