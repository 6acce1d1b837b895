"""Needs a package that does not exist: the deploy's pip install fails; run anyway, init fails
with Runtime.ImportModuleError."""
import wisp_no_such_package_xyz  # noqa: F401


def handler(event, context):
    return {"unreachable": True}
