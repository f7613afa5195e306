"""An async JSON API over the WHO's 2003 SARS daily reports."""

__version__ = "0.1.0"
