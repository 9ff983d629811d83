"""Container images of a model repository: ``infership build`` and ``infership compose``.

Nothing here is imported by the server: the serving image needs no engine tooling.
"""
