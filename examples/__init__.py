"""Examples for the README: `examples.tools` is the walkthrough's tool module."""
