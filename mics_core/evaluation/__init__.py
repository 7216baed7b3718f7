"""How MICS Studio measures itself: the synthetic demo data, the benchmark's baselines and its harness.

Nothing in the product's loop imports this package except to generate the demo data.
"""
