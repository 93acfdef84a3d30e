"""The baseline of the load benchmark: an IPython extension that does nothing."""


def load_ipython_extension(ipython: object) -> None:
    pass
