"""The board's emulated devices, one per module: gic, sp804, pl011 (MMIO) and psci (SMC).

Each implements :class:`qppsuite.core.devices.base.Device`; the machine maps the
MMIO ones, wires their interrupt outputs to the GIC and drives them with virtual time.
"""
