"""Thin command-line apps over the rtvos library."""
