"""A tiny Django app for the binding and demultiplexer tests: real models on a sqlite file."""
