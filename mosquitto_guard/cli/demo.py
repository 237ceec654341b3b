"""`mosquitto-guard demo`: verified launch on a throwaway broker, from nothing."""

from __future__ import annotations

import argparse


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> None:
    subparsers.add_parser(
        name,
        help=help_text,
        description=(
            "Generate a key and a policy, sign the distribution's dynamic-security plugin, start "
            "the real broker through `run` on 127.0.0.1, exchange a message, then show that a "
            "tampered and an unsigned plugin are rejected. Everything is removed afterwards."
        ),
    )


def run(args: argparse.Namespace) -> int:
    from mosquitto_guard.demo import run_demo

    run_demo(lambda line: print(line, flush=True))
    return 0
