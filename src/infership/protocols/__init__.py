"""Wire protocols: each subpackage translates one transport to and from infership.types."""
