"""AWS Session Manager data channel: codec, reliability layer, asyncio client and test emulator.

Modules: ``codec`` (wire format), ``smux`` (smux v1 for mux port sessions), ``reliable`` (seq/ack/
retransmit), ``client`` (the session API the gateway uses), ``emulator`` (AWS stand-in for tests).
"""
