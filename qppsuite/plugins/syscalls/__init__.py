"""plugins/syscalls"""
