"""The vendored data sets (UCR/UEA ``ucr/``, forecasting ``forecasting/``, labelled anomalies ``anomaly/``).

Files only; their sources and citations are in ``README.md`` beside this module. Found through
:func:`streamedge.paths.data_dir`.
"""
