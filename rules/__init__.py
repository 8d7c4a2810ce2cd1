"""No code: this file makes rules/ the package data ``verbund112.shipped.rules`` (pyproject.toml).

The shipped rules travel in the wheel that way and are found with importlib.resources, in an
installed wheel and in the checkout alike; see verbund112/shipped/.
"""
