"""plugins/syscalls_logger"""
