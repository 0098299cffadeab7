"""Shell scripts that run inside the guest: ``init.sh`` (PID 1) and ``workload.sh``.

They are package data, read with :mod:`importlib.resources`, so the builder
copies exactly what is reviewed and tested here into every image.
"""
