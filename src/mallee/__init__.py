"""Mallee: an AWS-compatible private cloud in the line of Eucalyptus."""

__version__ = "0.1.0"
