"""Persona vectors and user-persona vectors: extract, steer, monitor, flag, predict."""
