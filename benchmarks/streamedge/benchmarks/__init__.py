"""Benchmarks that print figures: ratios against a baseline measured in the same run.

Run them with ``streamedge bench <area>`` (or ``make bench``). They may import every area,
TensorFlow included; nothing else imports them.
"""
