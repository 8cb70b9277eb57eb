"""The C extension of tienda_platform (src/tienda_platform/_stackcache.c); everything else
about the build is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("tienda_platform._stackcache", sources=["src/tienda_platform/_stackcache.c"])
    ]
)
