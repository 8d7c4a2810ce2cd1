"""verbund112: the service of one site of the Leitstellenverbund Ostthüringen."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("verbund112")  # the installed distribution's, so the wheel and the checkout agree
except PackageNotFoundError:  # pragma: no cover - run from a tree that was never installed
    __version__ = "0+unknown"
