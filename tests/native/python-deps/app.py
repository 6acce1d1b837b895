"""Imports a pure-Python PyPI package that the deploy installs into the package (pip install -t)."""
import six


def handler(event, context):
    return {"six": six.__version__, "text_type": six.text_type.__name__, "file": six.__file__}
