"""The benchmarks' generated point layer: N points uniform over Monterrey (seeded, so
every script and run gets the same file), with a 7-value category and a 1,000-value
number. Usage: python3 mty_points.py OUT.csv [N=1000000]."""
import random
import sys

random.seed(11)
n = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
with open(sys.argv[1], "w") as f:
    f.write("lon,lat,categoria,valor\n")
    for i in range(n):
        f.write(f"{random.uniform(-100.42, -100.18):.6f},{random.uniform(25.62, 25.78):.6f},c{i % 7},{i % 1000}\n")
