"""``python -m pioreactor_appliance.hardware.sim --port 8888 [--seed N] [--speed X] [--count K]``

Serves K simulated Pioreactors on consecutive ports (seeds N, N+1, ...) until interrupted, so
pigpio's client (``pigpio.pi(host, port)``) and the appliance's drivers can be pointed at them.
"""

from __future__ import annotations

import argparse
import sys

from twisted.internet import reactor
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

from pioreactor_appliance.hardware.sim.model import build_pioreactor
from pioreactor_appliance.hardware.sim.server import PigpioFactory

log = Logger()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pioreactor_appliance.hardware.sim", description="Simulated Pioreactor(s) behind a pigpiod-compatible socket.")
    parser.add_argument("--port", type=int, default=8888, help="first TCP port (default 8888)")
    parser.add_argument("--interface", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the first reactor")
    parser.add_argument("--speed", type=float, default=1.0, help="how much faster than real time cultures grow and vials heat")
    parser.add_argument("--count", type=int, default=1, help="how many reactors, one port each")
    args = parser.parse_args(argv)
    if args.count < 1 or args.speed <= 0:
        parser.error("--count must be at least 1 and --speed above 0")
    return args


def main(argv: list[str]) -> None:
    args = parse(argv)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    for i in range(args.count):
        daemon, model = build_pioreactor(reactor, args.seed + i, args.speed)
        model.start()
        reactor.listenTCP(args.port + i, PigpioFactory(daemon), interface=args.interface)
        log.info("simulated Pioreactor {n} (seed {seed}) on {interface}:{port}", n=i + 1, seed=args.seed + i, interface=args.interface, port=args.port + i)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
