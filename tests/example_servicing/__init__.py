"""A sample servicing module, the kind of code loanstate is embedded in, for the test kit's worked example.

:mod:`.loan_book` is correct; :mod:`.eager_loan_book` has a planted bug (it
notifies the platform before the change is checked and committed) that
``tests/test_testing_kit.py`` proves the kit finds and shrinks.
"""
