"""Lifecycle definitions shipped with loanstate, as TOML package data."""
