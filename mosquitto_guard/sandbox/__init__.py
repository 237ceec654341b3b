"""Confinement of the broker process before it `exec`s the broker.

`landlock` restricts which files the process may read, write and execute, which TCP ports it
may bind and connect to, and, on kernels that support it, whom it may signal and which abstract
UNIX sockets it may reach. A confinement cannot be lifted once applied, and it is inherited by
every child and across `exec`.
"""
