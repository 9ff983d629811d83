"""Kubernetes: manifests as data (``manifests``), rendered as YAML or a kustomize tree.

Nothing here is imported by the server; the ``kubernetes`` client is needed only by the
modules that talk to a cluster.
"""
