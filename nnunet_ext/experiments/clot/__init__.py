"""The thrombus experiments (Tables 5-7): profiles, rows, the paper's numbers, aggregation, the report, the harness."""
