"""Thin shim: metadata and pins live in pyproject.toml."""

from setuptools import setup

setup()
