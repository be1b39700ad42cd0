"""Localize persona representations by layer (scikit-learn probes over `ActivationSet`)."""
