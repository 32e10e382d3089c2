"""The pure core: window arithmetic, reply latency, the policy and its state machine.

No Faust, aiokafka, Redis or HTTP imports here, and no clock reads: time is always passed in
(`now_ms`). The live scorer and the offline backtest run exactly this code.
"""
