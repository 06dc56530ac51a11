"""Build hook for the optional C fast path (passnat._speedups).

Everything else is in pyproject.toml.  The extension is optional: if it cannot
be compiled, passnat runs the same fast path in pure Python.
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("passnat._speedups", ["passnat/_speedups.c"], optional=True,
                             extra_compile_args=["-O2"])])
