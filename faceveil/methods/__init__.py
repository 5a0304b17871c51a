"""Obfuscation methods: each hides the pixels of given regions, in place."""

from faceveil.methods.base import Method, create, registered

__all__ = ["Method", "create", "registered"]
