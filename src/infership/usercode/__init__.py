"""A model's own Python code: loading it, and running it in threads or worker processes."""

from infership.usercode.hosts import CodeHost, load_code

__all__ = ["CodeHost", "load_code"]
