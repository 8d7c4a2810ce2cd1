"""No code: this file makes asterisk-config/ the package data ``verbund112.shipped.asterisk_config``.

See pyproject.toml: the templates and the site values travel in the wheel that way and are found
with importlib.resources, in an installed wheel and in the checkout alike; see verbund112/shipped/.
"""
