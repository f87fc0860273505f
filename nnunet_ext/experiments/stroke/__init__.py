"""The stroke experiments (Tables 2-3 and the robustness matrix): settings and profiles, the harness, the report."""
