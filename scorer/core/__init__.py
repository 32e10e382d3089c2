"""The pure core: window arithmetic, reply latency, the policy and its state machine.

No Faust, aiokafka, Redis or HTTP imports here, and no clock reads: time is always passed in
(`now_ms`). The live scorer and the offline backtest run exactly this code.

The install compiles these modules with mypyc where it can (setup.py); `implementation` decides,
before any of them is imported, whether the compiled modules or their source run.
"""

from scorer.core import implementation as _implementation

LOADED_FROM = _implementation.choose()
"""'installed' (what the install built: compiled modules where it made them) or 'source' (pure Python)."""
