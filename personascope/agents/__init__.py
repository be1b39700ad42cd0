"""Systems under test that are not audits: the memory agent (`memory`) and its A-MemGuard-style defense (`guard`).

The memory-injection audit (`personascope.audits.memory`) attacks the agent and measures the defense.
"""
