"""Which packages this Python has, and their versions: for the checks that name what is missing before any
work starts, and for the versions a run or an export records."""

import importlib.util
import platform
from collections.abc import Iterable
from importlib import metadata


def installed(name: str) -> bool:
    """Whether the package `name` can be imported here (found, without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def missing(names: Iterable[str]) -> list[str]:
    """Those of the packages `names` that are not installed, in their order."""
    return [name for name in names if not installed(name)]


def versions(names: Iterable[str], python: bool = True) -> dict[str, str]:
    """{name: installed version, or "not installed"} of the distributions `names`, after {"python": its version}
    when `python`."""
    found = {"python": platform.python_version()} if python else {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found
