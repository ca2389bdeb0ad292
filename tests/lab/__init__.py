"""Network-namespace lab tests (need root; see harness.py)."""
