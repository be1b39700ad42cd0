"""Privacy building blocks of the leakage audit: PII detection, synthetic profiles, the CIMemories reader.

`pii` (presidio, offline; presidio and spaCy load only when first used), `profiles` (synthetic
users and task contexts) and `cimemories` (CIMemories profile files). Nothing is imported here.
"""
