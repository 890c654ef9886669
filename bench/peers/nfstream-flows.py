"""Counts the flows nfstream finds in a capture: the nfstream peer of bench/run.sh.

Usage: python3 bench/peers/nfstream-flows.py CAPTURE

Flow metering only (statistical_analysis=False, n_dissections=0: no nDPI dissection), with
nfstream's default number of meters. Prints one line: packets and flows. bench/run.sh times the
whole script, interpreter start-up included.
"""

import sys

from nfstream import NFStreamer


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    streamer = NFStreamer(source=sys.argv[1], statistical_analysis=False, n_dissections=0)
    flows = 0
    packets = 0
    for flow in streamer:
        flows += 1
        packets += flow.bidirectional_packets
    print(f"nfstream: {packets} packets in {flows} flows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
