"""Model repositories: where model configs and artifacts come from."""

from infership.repository.filesystem import FilesystemRepository, ModelSource
from infership.repository.manifest import ModelManifest, load_manifest

__all__ = ["FilesystemRepository", "ModelManifest", "ModelSource", "load_manifest"]
