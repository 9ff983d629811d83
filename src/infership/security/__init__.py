"""Signed and encrypted models: who produced a model version, and its weights kept secret at rest.

``signing`` wraps OpenSSF ``model-signing`` (signatures over whole version folders), ``encryption``
and ``keys`` hold the AES-256-GCM file format and where keys come from, and ``guard`` is what the
loader asks before a version runs. See docs/model-security.md.
"""
