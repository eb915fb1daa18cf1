"""The end-to-end demo: the whole living system on real data and the local broker.

1. **training**: the classifier on ItalyPowerDemand and the LSTM forecaster on Airline 1949-1956 are
   trained, registered (signed) and promoted (``streamedge train``, ``streamedge models``).
2. **starting**: a stream worker, the retrainer (``streamedge train watch``) and an edge agent
   whose link to the broker runs through a local TCP proxy, cut (:mod:`.link`).
3. **steady**: the ItalyPowerDemand test series (one meter each) and nine airports up to month
   44 are replayed, with 1 % garbage; an injected spike must come out as an anomaly.
4. **drift**: the airports' level shifts; the worker's drift monitor asks for a retrain, the
   retrainer retrains on the history, gates and promotes v2 (signed promotion record), and the
   worker hot-reloads it without restart.
5. **after**: three more airports at the new level are served by v2. Meanwhile the edge device
   buffered its results on disk; its link is restored and it delivers them.
6. **summary** (:mod:`.summary`) and **report** (:mod:`.report`): lost and duplicate counts per
   component, the loop's timings and errors, and one HTML page of pictures.

A live view (:mod:`.view`) draws the stack each second. Every area runs as its public command in a
child process (:mod:`.stack`), so this package imports neither Faust nor TensorFlow.
"""

from __future__ import annotations

from streamedge.demo.run import DemoConfig, run_demo

__all__ = ["DemoConfig", "run_demo"]
