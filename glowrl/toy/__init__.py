"""The built-in toy world: a multi-step arithmetic task with realistic mistakes, and a tiny Qwen2 built locally.

Used by the demo, the tests and the speed scripts; nothing here is downloaded. Not for real training.
"""
