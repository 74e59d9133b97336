"""saar.bench: the evaluation behind ``saar bench matrix|live|hotpath``.

* ``matrix``: the pure policy over seeded synthetic agent sessions (``workloads``), against
  single-turn and sticky baselines and ablations, with one shared prefix-cache cost model;
* ``live``: concurrent agent sessions through the real Envoy + saar + emulator, continuity
  checked against the emulator's backend-truth log, with injected 503s;
* ``hotpath``: latency added by saar over Envoy without ext_proc in the same run, throughput,
  CPU per request, in-process policy decisions/s and a cProfile of the ext_proc stream.

Results are written under ``bench/results/`` (Markdown, JSON, SVG plots).
"""

__all__: list[str] = []
