"""Draw the scale curve: start -> enforced (groupd and the nft -f peer),
groupd's peak RSS and the kernel elements, against the endpoint count.

usage: plot.py scale.csv scale.png   (python3-matplotlib)
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = list(csv.DictReader(open(sys.argv[1])))
n = [int(r["endpoints"]) for r in rows]
fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 4))
a.plot(n, [float(r["enforced_s"]) for r in rows], "o-", label="groupd start -> enforced")
a.plot(n, [float(r["peer_s"]) for r in rows], "s--", label="nft -f flat set (peer)")
a.set_ylabel("seconds")
a.legend()
b.plot(n, [float(r["peak_rss_mb"]) for r in rows], "o-", color="tab:red")
b.set_ylabel("groupd peak RSS (MB)")
c.plot(n, [int(r["kernel_elements"]) for r in rows], "o-", color="tab:green", label="elements")
c.plot(n, n, ":", color="grey", label="one per endpoint")
c.set_ylabel("kernel elements")
c.legend()
for ax in (a, b, c):
    ax.set_xscale("log")
    ax.set_xlabel("endpoints (1,000 local)")
    ax.grid(True, which="both", alpha=0.3)
fig.suptitle("groupd at scale (scenario C scaled): cost grows with the cluster, not local x group size")
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
