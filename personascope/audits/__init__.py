"""Risk audits declared as data: persona bias, drift, memory leakage, memory injection."""
