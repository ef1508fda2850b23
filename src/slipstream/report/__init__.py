"""``slipstream report``: one self-contained HTML page with the comparison and its plots."""
