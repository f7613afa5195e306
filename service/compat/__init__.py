"""Workarounds that lean on other libraries' private names, one module per library.

Each module opens with the upstream version it was written against, the private names it
relies on, why it exists (with the upstream issue where there is one) and when it can go.
``tests/test_upstream_contract.py`` fails, naming the module, as soon as one of those names
or signatures changes.
"""
