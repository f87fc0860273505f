"""Reproduction of the paper's Tables 2-3 (grid of methods x drop probabilities) and the robustness report."""
