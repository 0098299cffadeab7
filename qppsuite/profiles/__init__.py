"""OSI profiles of Linux kernels: what osi_linux reads and the image builder writes.

``profile.py`` is the runtime profile (:class:`~qppsuite.profiles.profile.KernelProfile`: symbols, struct layouts
and constants, from qppsuite's own JSON or a Volatility 3 ISF); ``dwarf.py`` builds one from a kernel's DWARF;
``dbg.py`` takes the debug vmlinux out of a Debian ``-dbg`` package.  Both the image builder and osi_linux import
this package; neither imports the other.
"""
