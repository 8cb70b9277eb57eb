"""The C extensions of tienda_platform (src/tienda_platform/_stackcache.c and _otlp.c);
everything else about the build is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("tienda_platform._stackcache", sources=["src/tienda_platform/_stackcache.c"]),
        Extension("tienda_platform._otlp", sources=["src/tienda_platform/_otlp.c"]),
    ]
)
